// The unmodified @e2b/code-interpreter JS SDK against Sandlot's code-interpreter-v1.
// Run by tests/e2e/test_code_interpreter.py once the template is built.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'

test('runCode keeps state, streams output, reports errors, returns charts and contexts', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000, envs: { GREETING: 'from-js' } })
  try {
    await sbx.runCode('x = 41')
    assert.equal((await sbx.runCode('x + 1')).text, '42')

    const seen = []
    const printed = await sbx.runCode('import os; print(os.environ["GREETING"])', {
      onStdout: (msg) => seen.push(msg.line),
    })
    assert.deepEqual(printed.logs.stdout, ['from-js\n'])
    assert.equal(seen.join(''), 'from-js\n')

    const failed = await sbx.runCode('1 / 0')
    assert.equal(failed.error.name, 'ZeroDivisionError')

    const chart = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()')
    const png = Buffer.from(chart.results[0].png, 'base64')
    assert.equal(png.subarray(1, 4).toString(), 'PNG')

    const ctx = await sbx.createCodeContext({ language: 'python' })
    assert.equal((await sbx.runCode('x', { context: ctx })).error.name, 'NameError')
    const contexts = await sbx.listCodeContexts()
    assert.ok(contexts.some((c) => c.id === ctx.id))
    await sbx.removeCodeContext(ctx)

    const bash = await sbx.runCode('echo $((6 * 7))', { language: 'bash' })
    assert.equal(bash.logs.stdout.join(''), '42\n')
  } finally {
    await sbx.kill()
  }
})
