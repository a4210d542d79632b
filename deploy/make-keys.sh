#!/bin/sh
# The keys every API instance and node agent of ONE cluster must share, made once (openssl only,
# no Sandlot install needed). A single server makes these in its data dir on first use; servers of
# a cluster must agree on them, or a secret sealed on one node can't be opened on another, and warm
# pool, volume, Prime gateway and webhook signatures, the egress CA and workload-identity tokens
# differ from node to node.
#
#   deploy/make-keys.sh DIR          # DIR must not exist yet
#
# DIR gets the data-dir layout Sandlot reads (secrets.key … at the top, egress-ca/ca.crt,
# egress-ca/ca.key, egress-ca/identity.key). Then either
#   kubectl -n sandlot create secret generic sandlot-keys --from-file=DIR --from-file=DIR/egress-ca
# (the init containers in deploy/kubernetes copy them into each data dir), or, on systemd hosts,
# copy DIR's tree into each host's SANDLOT_DATA_DIR before the first start (deploy/README.md).
# Keep DIR somewhere safe (or delete it): it holds private keys.
set -eu

dir=${1:?usage: make-keys.sh DIR}
if [ -e "$dir" ]; then
    echo "$dir exists: give a new directory" >&2
    exit 1
fi
umask 077
mkdir -p "$dir/egress-ca"
chmod 0755 "$dir/egress-ca"   # the data dir's egress-ca is searched by sandbox mounts (bundles)

# 32-byte symmetric keys, hex like secret_keys.data_dir_key writes them
for name in secrets.key webhooks.key warm-pool.key volume-tokens.key prime-gateway.key; do
    openssl rand -hex 32 > "$dir/$name"
done

# egress CA (EC P-256, PKCS#8) and the workload-identity signing key (EC P-256, PKCS#8)
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/egress-ca/ca.key"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/egress-ca/identity.key"
serial=$(openssl rand -hex 4)
openssl req -x509 -new -key "$dir/egress-ca/ca.key" -sha256 -days 3650 \
    -subj "/CN=Sandlot egress CA $serial" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$dir/egress-ca/ca.crt"
chmod 0644 "$dir/egress-ca/ca.crt"
echo "keys written to $dir"
