// Issue 15: the unmodified @e2b/code-interpreter JS SDK when its sandbox is killed under runCode.
// Run by tests/e2e/test_fidelity_envd.py once code-interpreter-v1 is built.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'

test('runCode rejects with the sandbox killed', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  let started
  const seen = new Promise((resolve) => { started = resolve })
  // settled into a value at once: its rejection arrives while the kill is still awaited
  const outcome = sbx.runCode("print('started', flush=True)\nimport time\ntime.sleep(600)", {
    onStdout: () => started(), timeoutMs: 300_000,
  }).then(() => null, (err) => err)
  await seen
  await sbx.kill()
  const err = await outcome
  assert.ok(err, 'runCode resolved although its sandbox was killed')
  assert.equal(err.name, 'TimeoutError', `${err.name}: ${err.message}`)
  assert.match(err.message, /sandbox was killed while the request was in progress/)
})
