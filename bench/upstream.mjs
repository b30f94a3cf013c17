// The benchmark's upstream: node:http, keep-alive, three routes. Prints "ready <port>".
import { createServer } from 'node:http'

const small = JSON.stringify({ id: 42, name: 'Ada Lovelace', email: 'ada@example.com', roles: ['admin', 'user'], active: true, created: '2026-01-01T00:00:00Z', tags: ['a', 'b', 'c'], score: 98.6, note: 'x'.repeat(40) })
const large = Buffer.alloc(64 * 1024, 'z')

const server = createServer((req, res) => {
  if (req.method === 'POST') {
    const chunks = []
    req.on('data', (chunk) => chunks.push(chunk))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length })
      res.end(body)
    })
    return
  }
  if (req.url.endsWith('/large')) {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': large.length })
    res.end(large)
    return
  }
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(small) })
  res.end(small)
})
server.keepAliveTimeout = 60_000
server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => console.log(`ready ${server.address().port}`))
process.on('SIGTERM', () => server.close(() => process.exit(0)))
