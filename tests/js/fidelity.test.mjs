// Issue 15 with the unmodified e2b JS SDK: files behaviours, and what it reports when a sandbox is killed under a streaming
// command. Run by tests/e2e/test_fidelity_envd.py (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox, TimeoutError } from 'e2b'

const KILLED = /killed or reached its end of life/

function killedError(err) {
  assert.ok(err instanceof TimeoutError, `${err?.name}: ${err?.message}`)
  assert.match(err.message, KILLED)
  return true
}

test('background command: the handle reports the sandbox killed', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  let started
  const seen = new Promise((resolve) => { started = resolve })
  const handle = await sbx.commands.run('echo started; sleep 600', { background: true, onStdout: () => started() })
  await seen
  assert.equal(await Sandbox.kill(sbx.sandboxId), true)
  await assert.rejects(handle.wait(), killedError)
})

test('foreground command: run rejects with the sandbox killed', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  let started
  const seen = new Promise((resolve) => { started = resolve })
  // settled into a value at once: its rejection arrives while the kill is still awaited
  const outcome = sbx.commands.run('echo started; sleep 600', { onStdout: () => started(), timeoutMs: 0 })
    .then(() => null, (err) => err)
  await seen
  await sbx.kill()
  const err = await outcome
  assert.ok(err, 'run resolved although its sandbox was killed')
  killedError(err)
})

test('files: depth-first listing, overwrite clears metadata, /proc and pipes read to EOF', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  try {
    await sbx.commands.run('mkdir -p t/b/x t/a && touch t/z t/b/1 t/b/x/f t/a/k t/B')
    const root = '/home/user/t'
    const listed = (await sbx.files.list(root, { depth: 5 })).map((e) => e.path.slice(root.length + 1))
    assert.deepEqual(listed, ['B', 'a', 'a/k', 'b', 'b/1', 'b/x', 'b/x/f', 'z'])

    const path = '/home/user/meta.txt'
    assert.deepEqual((await sbx.files.write(path, 'one', { metadata: { owner: 'alice' } })).metadata, { owner: 'alice' })
    await sbx.files.write(path, 'two')
    assert.ok(!(await sbx.files.getInfo(path)).metadata?.owner)

    assert.match(await sbx.files.read('/proc/meminfo'), /^MemTotal:/)
    await sbx.commands.run('mkfifo /tmp/pipe && (seq 1 50000 > /tmp/pipe &)')
    const expected = Array.from({ length: 50000 }, (_, i) => `${i + 1}\n`).join('')
    assert.equal(await sbx.files.read('/tmp/pipe'), expected)
  } finally {
    await sbx.kill()
  }
})
