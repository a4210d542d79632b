// Issue 15: what the unmodified e2b JS SDK reports when a sandbox is killed under a streaming
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
