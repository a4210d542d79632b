// Issue 15 with the unmodified e2b JS SDK: connect({ onResume: 'reboot' }) cold-boots a memory-paused
// sandbox, getInfo() reports its network, fork takes counts past the Python SDK's 20 up to 100.
// Run by tests/e2e/test_pause_fidelity.py (E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from 'e2b'

const BOOT_ID = '/proc/sys/kernel/random/boot_id'

test('onResume reboot: a cold boot from disk, not a memory restore', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 300_000 })
  try {
    await sbx.files.write('/home/user/kept.txt', 'js disk')
    await sbx.commands.run('sleep 1000', { background: true })
    const bootId = (await sbx.files.read(BOOT_ID)).trim()
    assert.equal(await sbx.pause(), true)
    const rebooted = await Sandbox.connect(sbx.sandboxId, { onResume: 'reboot' })
    assert.notEqual((await rebooted.files.read(BOOT_ID)).trim(), bootId)
    assert.equal(await rebooted.files.read('/home/user/kept.txt'), 'js disk')
    assert.equal((await rebooted.commands.run('pgrep -x sleep || echo none')).stdout.trim(), 'none')
    // and a plain pause + connect still restores memory (same boot)
    const bootAfter = (await rebooted.files.read(BOOT_ID)).trim()
    assert.equal(await rebooted.pause(), true)
    const restored = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await restored.files.read(BOOT_ID)).trim(), bootAfter)
  } finally {
    await Sandbox.kill(sbx.sandboxId)
  }
})

test('getInfo reports network; fork counts are checked against 100', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000, network: { allowOut: ['1.1.1.1'], denyOut: ['0.0.0.0/0'] } })
  try {
    const info = await sbx.getInfo()
    assert.deepEqual(info.network?.allowOut, ['1.1.1.1'])
    assert.deepEqual(info.network?.denyOut, ['0.0.0.0/0'])
    await assert.rejects(Sandbox.fork(sbx.sandboxId, { count: 101 }), /between 1 and 100/)
  } finally {
    await Sandbox.kill(sbx.sandboxId)
  }
})
