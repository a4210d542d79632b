// The unmodified e2b JS SDK against a real `sandlot serve`.
// Run by tests/e2e/test_js_sdk.py, which exports E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox, CommandExitError, FilesystemEventType } from 'e2b'

let sbx

before(async () => {
  sbx = await Sandbox.create({ timeoutMs: 120_000 })
})

after(async () => {
  if (sbx) await sbx.kill()
})

test('create, info, list', async () => {
  const info = await sbx.getInfo()
  assert.equal(info.sandboxId, sbx.sandboxId)
  assert.ok(await sbx.isRunning())
  const page = await Sandbox.list().nextItems()
  assert.ok(page.some((s) => s.sandboxId === sbx.sandboxId))
})

test('foreground commands, exit codes, users', async () => {
  const r = await sbx.commands.run('echo hello; whoami; pwd')
  assert.equal(r.stdout, 'hello\nuser\n/home/user\n')
  assert.equal(r.exitCode, 0)
  assert.equal((await sbx.commands.run('whoami', { user: 'root' })).stdout, 'root\n')
  await assert.rejects(sbx.commands.run('echo oops >&2; exit 7'), (err) => {
    assert.ok(err instanceof CommandExitError)
    assert.equal(err.exitCode, 7)
    assert.equal(err.stderr, 'oops\n')
    return true
  })
})

test('background command, stdin, kill', async () => {
  const cat = await sbx.commands.run('cat', { background: true, stdin: true })
  await sbx.commands.sendStdin(cat.pid, 'through stdin\n')
  await sbx.commands.closeStdin(cat.pid)
  const done = await cat.wait()
  assert.equal(done.stdout, 'through stdin\n')

  const sleeper = await sbx.commands.run('sleep 60', { background: true })
  const listed = await sbx.commands.list()
  assert.ok(listed.some((p) => p.pid === sleeper.pid))
  assert.equal(await sbx.commands.kill(sleeper.pid), true)
  await assert.rejects(sleeper.wait())
})

test('pty: a real terminal', async () => {
  const decoder = new TextDecoder()
  let output = ''
  const terminal = await sbx.pty.create({ cols: 100, rows: 30, onData: (d) => { output += decoder.decode(d) } })
  await sbx.pty.sendInput(terminal.pid, new TextEncoder().encode('tty; stty size; exit\n'))
  await terminal.wait()
  assert.match(output, /\/dev\/pts\/\d+/)
  assert.match(output, /30 100/)
})

test('files: write, read, list, watch', async () => {
  await sbx.files.makeDir('watched')
  const events = []
  const watcher = await sbx.files.watchDir('watched', (e) => { events.push(e) })
  await sbx.files.write('watched/a.txt', 'alpha')
  assert.equal(await sbx.files.read('watched/a.txt'), 'alpha')
  const entries = await sbx.files.list('watched')
  assert.deepEqual(entries.map((e) => e.name), ['a.txt'])
  for (let i = 0; i < 50 && !events.some((e) => e.name === 'a.txt'); i++) {
    await new Promise((r) => setTimeout(r, 100))
  }
  await watcher.stop()
  assert.ok(events.some((e) => e.name === 'a.txt' && (e.type === FilesystemEventType.CREATE || e.type === FilesystemEventType.WRITE)))
})

test('signed URLs work with plain fetch', async () => {
  const uploadUrl = await sbx.uploadUrl('/home/user/signed.txt', { useSignatureExpiration: 60 })
  const form = new FormData()
  form.append('file', new Blob(['signed body']), 'signed.txt')
  const up = await fetch(uploadUrl, { method: 'POST', body: form })
  assert.equal(up.status, 200)
  const downloadUrl = await sbx.downloadUrl('/home/user/signed.txt', { useSignatureExpiration: 60 })
  const down = await fetch(downloadUrl)
  assert.equal(down.status, 200)
  assert.equal(await down.text(), 'signed body')
  const tampered = downloadUrl.replace(/signature=v1_[^&]+/, 'signature=v1_wrong')
  assert.equal((await fetch(tampered)).status, 401)
})
