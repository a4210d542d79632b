// E2B volumes with the unmodified e2b JS SDK: Volume CRUD and content, volumeMounts on create.
// Run by tests/e2e/test_volumes.py, which exports E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY and
// E2B_VOLUME_API_URL (the content API's base: the same server).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox, Volume, VolumePathNotFoundError } from 'e2b'

test('volume CRUD, content API and a mount shared with a sandbox', async () => {
  const name = `js-${Math.random().toString(16).slice(2, 10)}`
  const vol = await Volume.create(name)
  assert.equal(vol.name, name)
  assert.ok((await Volume.list()).some((v) => v.volumeId === vol.volumeId))
  const stat = await vol.writeFile('/dir/hello.txt', 'hello from js', { force: true })
  assert.equal(stat.path, '/dir/hello.txt')
  assert.equal(stat.size, 13)
  assert.equal(await vol.readFile('/dir/hello.txt'), 'hello from js')
  assert.deepEqual((await vol.list('/', { depth: 2 })).map((e) => e.path), ['/dir', '/dir/hello.txt'])
  await assert.rejects(vol.readFile('/nope'), VolumePathNotFoundError)

  const sbx = await Sandbox.create({ timeoutMs: 120_000, volumeMounts: { '/mnt/v': vol } })
  try {
    assert.equal((await sbx.commands.run('cat /mnt/v/dir/hello.txt')).stdout, 'hello from js')
    await sbx.commands.run('echo from-sandbox > /mnt/v/back.txt')
    assert.deepEqual((await sbx.getInfo()).volumeMounts, [{ name, path: '/mnt/v' }])
  } finally {
    await sbx.kill()
  }
  assert.equal((await vol.readFile('/back.txt')).trim(), 'from-sandbox')
  await vol.remove('/dir')
  assert.equal(await vol.exists('/dir'), false)
  assert.equal(await Volume.destroy(vol.volumeId), true)
  assert.equal(await Volume.destroy(vol.volumeId), false)
})
