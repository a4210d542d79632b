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

test('every language E2B has, env vars and contexts per language, chart and data results', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 300_000, envs: { GREETING: 'from-js' } })
  try {
    const js = await sbx.runCode(
      'import { join } from "node:path"\nconst parts = await Promise.resolve(["a", process.env.GREETING])\njoin(...parts)',
      { language: 'js' },
    )
    assert.equal(js.text, 'a/from-js')
    const ts = await sbx.runCode('const n: number = 41\nn + 1', { language: 'ts' })
    assert.equal(ts.text, '42')
    const r = await sbx.runCode('cat(Sys.getenv("PER_RUN"))', { language: 'r', envs: { PER_RUN: 'r env' } })
    assert.deepEqual(r.logs.stdout, ['r env'])
    const java = await sbx.runCode('System.out.println("java " + (6 * 7));', { language: 'java' })
    assert.deepEqual(java.logs.stdout, ['java 42\n'])

    const ctx = await sbx.createCodeContext({ language: 'typescript', cwd: '/tmp' })
    assert.equal(ctx.language, 'typescript')
    assert.equal(ctx.cwd, '/tmp')
    assert.equal((await sbx.runCode('Deno.cwd()', { context: ctx })).text, '/tmp')
    await sbx.removeCodeContext(ctx)

    const bars = await sbx.runCode(
      "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])\nplt.title('bars')\nplt.show()",
    )
    assert.equal(bars.results[0].chart.type, 'bar')
    assert.equal(bars.results[0].chart.title, 'bars')
    assert.deepEqual(bars.results[0].chart.elements.map((e) => e.label), ['a', 'b'])
    const frame = await sbx.runCode("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
    assert.deepEqual(frame.results[0].data, { a: [1, 2] })
  } finally {
    await sbx.kill()
  }
})
