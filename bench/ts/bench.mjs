// The official TypeScript MCP SDK (@modelcontextprotocol/sdk, pinned in package.json) as a peer of
// the Hub benchmark (bench/hub.py). One script, three roles:
//
//   node bench.mjs server stdio                 the `add` tool over stdio (StdioServerTransport)
//   node bench.mjs server http PORT [--stateless]
//       Streamable HTTP at /mcp on node:http with JSON replies (enableJsonResponse). Default: the
//       SDK's session mode (one transport per client session, reused); --stateless: a fresh
//       McpServer + transport per request, the SDK's documented stateless pattern.
//   node bench.mjs client                       a driver for bench/hub.py: JSON lines on stdin,
//       one JSON line per command on stdout:
//         {"cmd":"open","url":U} | {"cmd":"open","stdio":[argv...]}   -> {"ok":true,"server_pid":N|null}
//         {"cmd":"seq","n":N,"start":S}      N awaited calls add(i, 1), i = S..S+N-1
//         {"cmd":"conc","duration":D,"concurrency":C}   C callers sharing the client for D s
//             -> {"ok":true,"latencies":[s...],"errors":K,"first_error":E|null,"elapsed":s,"cpu":s}
//         {"cmd":"close"}                    -> {"ok":true}, then exit
//       Every answer is checked (the structured result must hold the right sum).
//
// The SDK is loaded from TS_BENCH_MODULES (a node_modules directory; `make` installs it into
// .cache/ts-bench), through createRequire so the script itself can live in the source tree.

import { createServer } from "node:http";
import { createRequire } from "node:module";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";

const modules = process.env.TS_BENCH_MODULES;
if (!modules) {
  process.stderr.write("TS_BENCH_MODULES must name the node_modules directory holding @modelcontextprotocol/sdk\n");
  process.exit(2);
}
const require = createRequire(join(modules, "..", "package.json"));
const sdk = (path) => require(`@modelcontextprotocol/sdk/${path}`);

function newServer() {
  const { McpServer } = sdk("server/mcp.js");
  const { z } = require("zod");
  const server = new McpServer({ name: "bench-typescript", version: "1.0.0" });
  server.registerTool(
    "add",
    {
      description: "Add two integers.",
      inputSchema: { a: z.number().int(), b: z.number().int() },
      outputSchema: { result: z.number().int() },
    },
    async ({ a, b }) => ({ content: [{ type: "text", text: String(a + b) }], structuredContent: { result: a + b } }),
  );
  return server;
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const raw = Buffer.concat(chunks).toString("utf8");
  return raw ? JSON.parse(raw) : undefined;
}

async function serveHttp(port, stateless) {
  const { StreamableHTTPServerTransport } = sdk("server/streamableHttp.js");
  const { isInitializeRequest } = sdk("types.js");
  const sessions = new Map(); // Mcp-Session-Id -> transport

  async function handle(req, res) {
    if (new URL(req.url, "http://x").pathname !== "/mcp") {
      res.writeHead(404).end();
      return;
    }
    const body = req.method === "POST" ? await readBody(req) : undefined;
    if (stateless) {
      const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
      const server = newServer();
      res.on("close", () => { transport.close(); server.close(); });
      await server.connect(transport);
      await transport.handleRequest(req, res, body);
      return;
    }
    const sid = req.headers["mcp-session-id"];
    let transport = sid ? sessions.get(sid) : undefined;
    if (!transport) {
      if (sid || req.method !== "POST" || !isInitializeRequest(body)) {
        res.writeHead(sid ? 404 : 400, { "Content-Type": "application/json" }).end(JSON.stringify({
          jsonrpc: "2.0", id: null, error: { code: -32000, message: sid ? "unknown session" : "no session" },
        }));
        return;
      }
      transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        enableJsonResponse: true,
        onsessioninitialized: (id) => sessions.set(id, transport),
      });
      transport.onclose = () => { if (transport.sessionId) sessions.delete(transport.sessionId); };
      await newServer().connect(transport);
    }
    await transport.handleRequest(req, res, body);
  }

  const http = createServer((req, res) => {
    handle(req, res).catch((err) => {
      process.stderr.write(`request failed: ${err?.stack ?? err}\n`);
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  http.keepAliveTimeout = 60_000;
  await new Promise((resolve) => http.listen(port, "127.0.0.1", resolve));
}

async function serveStdio() {
  const { StdioServerTransport } = sdk("server/stdio.js");
  await newServer().connect(new StdioServerTransport());
}

// -- the client driver ---------------------------------------------------------------------------

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function openClient(msg) {
  const { Client } = sdk("client/index.js");
  const client = new Client({ name: "toolmesh-bench", version: "1.0.0" });
  let transport;
  if (msg.url) {
    const { StreamableHTTPClientTransport } = sdk("client/streamableHttp.js");
    transport = new StreamableHTTPClientTransport(new URL(msg.url));
  } else {
    const { StdioClientTransport } = sdk("client/stdio.js");
    const [command, ...args] = msg.stdio;
    transport = new StdioClientTransport({ command, args, env: { ...process.env }, stderr: "inherit" });
  }
  await client.connect(transport);
  await client.listTools(); // the client validates structured results against the output schema it lists
  return { client, transport };
}

function checker(client, stats) {
  return async (i) => {
    const t0 = performance.now();
    try {
      const r = await client.callTool({ name: "add", arguments: { a: i, b: 1 } });
      const t1 = performance.now();
      const got = r.structuredContent?.result;
      if (r.isError || got !== i + 1) {
        stats.errors += 1;
        stats.first_error ??= r.isError ? `isError: ${JSON.stringify(r.content).slice(0, 300)}`
          : `wrong sum: add(${i}, 1) returned ${JSON.stringify(got)}`;
      } else {
        stats.latencies.push((t1 - t0) / 1000);
      }
    } catch (err) {
      stats.errors += 1;
      stats.first_error ??= `${err?.name ?? "Error"}: ${String(err?.message ?? err).slice(0, 300)}`;
    }
  };
}

async function measure(client, body) {
  const stats = { latencies: [], errors: 0, first_error: null };
  const cpu0 = cpuSeconds();
  const t0 = performance.now();
  await body(checker(client, stats));
  stats.elapsed = (performance.now() - t0) / 1000;
  stats.cpu = cpuSeconds() - cpu0;
  return stats;
}

async function drive() {
  let opened = null;
  const reply = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
  const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const msg = JSON.parse(line);
    try {
      if (msg.cmd === "open") {
        opened = await openClient(msg);
        reply({ ok: true, server_pid: opened.transport.pid ?? null });
      } else if (msg.cmd === "seq") {
        reply({ ok: true, ...(await measure(opened.client, async (call) => {
          for (let i = msg.start; i < msg.start + msg.n; i++) await call(i);
        })) });
      } else if (msg.cmd === "conc") {
        const deadline = performance.now() + msg.duration * 1000;
        reply({ ok: true, ...(await measure(opened.client, async (call) => {
          const worker = async (k) => {
            let i = k * 10_000_000;
            while (performance.now() < deadline) await call(++i);
          };
          await Promise.all(Array.from({ length: msg.concurrency }, (_, k) => worker(k)));
        })) });
      } else if (msg.cmd === "close") {
        if (opened) await opened.client.close();
        reply({ ok: true });
        process.exit(0);
      } else {
        reply({ ok: false, error: `unknown command ${msg.cmd}` });
      }
    } catch (err) {
      reply({ ok: false, error: `${err?.name ?? "Error"}: ${err?.message ?? err}` });
    }
  }
  if (opened) await opened.client.close(); // stdin closed: the benchmark went away
  process.exit(0);
}

const [role, transport, port] = process.argv.slice(2);
if (role === "server" && transport === "stdio") {
  await serveStdio();
} else if (role === "server" && transport === "http" && port) {
  await serveHttp(Number(port), process.argv.includes("--stateless"));
} else if (role === "client") {
  await drive();
} else {
  process.stderr.write("usage: bench.mjs server stdio | server http PORT [--stateless] | client\n");
  process.exit(2);
}
