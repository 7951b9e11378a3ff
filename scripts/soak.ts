// `pnpm soak -- --duration 10`: clients under load while server processes are killed
// (SIGKILL), restarted gracefully and made to drop connections at random. Prints issued /
// resolved / rejected / unsettled calls and memory at start and end; exits non-zero if a
// call never settled, a non-idempotent call ran twice, or a result went to the wrong call.
//
// Options: --duration <s> (10), --clients <n> (4), --concurrency <calls per client> (64),
// --seed <n> (random).
import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type Client, connect } from "@ezipc/client";
import { soakContract } from "./soak-contract.js";

const { values } = parseArgs({
  args: process.argv.slice(2).filter((arg) => arg !== "--"),
  options: {
    duration: { type: "string", default: "10" },
    clients: { type: "string", default: "4" },
    concurrency: { type: "string", default: "64" },
    seed: { type: "string" },
  },
});
const duration = Number(values.duration) * 1_000;
const clientCount = Number(values.clients);
const concurrency = Number(values.concurrency);
if (!(duration > 0) || !(clientCount > 0) || !(concurrency > 0)) {
  console.error("usage: soak [--duration seconds] [--clients n] [--concurrency n] [--seed n]");
  process.exit(2);
}

// A small seeded generator (mulberry32), so a failing run can be replayed with --seed.
const seed = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
let state = seed >>> 0;
function random(): number {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
}
const between = (low: number, high: number) => low + Math.floor(random() * (high - low));

const CALL_TIMEOUT = 5_000;
const dir = mkdtempSync(join(tmpdir(), "ezipc-soak-"));
const address = `unix:${join(dir, "soak.sock")}`;
const serverScript = fileURLToPath(new URL("./soak-server.ts", import.meta.url));

const stats = {
  issued: 0,
  resolved: 0,
  rejected: 0,
  errors: new Map<string, number>(),
  misrouted: 0,
  duplicates: 0,
  kills: 0,
  restarts: 0,
  drops: 0,
  reconnects: 0,
};
const executed = new Set<number>();
const inFlight = new Set<number>();

let server: ChildProcess | undefined;

/** Forks a server process; resolves once it listens. */
async function startServer(): Promise<void> {
  const child = fork(serverScript, [address], {
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  child.on("message", (message: { executed?: number[] }) => {
    for (const token of message.executed ?? []) {
      if (executed.has(token)) stats.duplicates++;
      executed.add(token);
    }
  });
  const [message] = (await Promise.race([
    once(child, "message"),
    once(child, "exit").then(([code]) => {
      throw new Error(`soak server exited with ${code} before it was ready`);
    }),
  ])) as [{ ready?: string }];
  if (message.ready === undefined) throw new Error("soak server did not say it was ready");
  server = child;
}

async function killServer(): Promise<void> {
  const child = server;
  server = undefined;
  if (child === undefined || child.exitCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGKILL");
  await exited;
}

async function stopServer(): Promise<void> {
  const child = server;
  server = undefined;
  if (child === undefined || child.exitCode !== null) return;
  const exited = once(child, "exit");
  child.send("stop");
  await exited;
}

function memory(): string {
  (globalThis as { gc?: () => void }).gc?.();
  const { rss, heapUsed } = process.memoryUsage();
  const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `rss ${mb(rss)}, heap used ${mb(heapUsed)}`;
}

let nextToken = 0;
let running = true;

/** One call (or notification), counted from issue to settlement. */
async function operation(client: Client<typeof soakContract.server>): Promise<void> {
  const token = nextToken++;
  stats.issued++;
  inFlight.add(token);
  try {
    const pick = random();
    let result: number | undefined;
    if (pick < 0.4) result = await client.call("echo", { token }, { timeout: CALL_TIMEOUT });
    else if (pick < 0.7) result = await client.call("read", { token }, { timeout: CALL_TIMEOUT });
    else if (pick < 0.95) {
      result = await client.call("slow", { token, ms: between(0, 200) }, { timeout: CALL_TIMEOUT });
    } else {
      await client.notify("note", { token });
      result = token;
    }
    if (result !== token) stats.misrouted++;
    stats.resolved++;
  } catch (error) {
    stats.rejected++;
    const name = (error as Error).name ?? "Error";
    stats.errors.set(name, (stats.errors.get(name) ?? 0) + 1);
  } finally {
    inFlight.delete(token);
  }
}

async function worker(client: Client<typeof soakContract.server>): Promise<void> {
  while (running) await operation(client);
}

/** Random faults until `running` is false. */
async function chaos(): Promise<void> {
  while (running) {
    await new Promise((resolve) => setTimeout(resolve, between(200, 1_000)));
    if (!running) break;
    const pick = random();
    if (pick < 0.35) {
      stats.kills++;
      await killServer();
      await new Promise((resolve) => setTimeout(resolve, between(0, 300)));
      await startServer();
    } else if (pick < 0.6) {
      stats.restarts++;
      await stopServer();
      await startServer();
    } else {
      stats.drops++;
      server?.send("drop");
    }
  }
}

console.log(
  `soak: ${duration / 1_000} s, ${clientCount} clients × ${concurrency} concurrent calls, seed ${seed}`,
);
await startServer();
const clients = await Promise.all(
  Array.from({ length: clientCount }, () =>
    connect(soakContract, address, {
      timeout: CALL_TIMEOUT,
      reconnect: { initialDelay: 50, maxDelay: 1_000, idempotentRetries: 2 },
      heartbeat: { interval: 1_000, timeout: 1_000 },
    }),
  ),
);
for (const client of clients) client.on("connect", () => stats.reconnects++);
const memoryAtStart = memory();
const started = Date.now();

const workers = clients.flatMap((client) =>
  Array.from({ length: concurrency }, () => worker(client)),
);
const faults = chaos();
await new Promise((resolve) => setTimeout(resolve, duration));
running = false;
await faults;
if (server === undefined) await startServer();

// Every call has a timeout, so everything settles within it; give it twice that.
const settled = Promise.all(workers);
const deadline = new Promise((resolve) => setTimeout(resolve, 2 * CALL_TIMEOUT).unref());
await Promise.race([settled, deadline]);
const unsettled = inFlight.size;
const pending = clients.reduce((sum, client) => sum + client.pendingCount, 0);
await Promise.all(clients.map((client) => client.close()));
await stopServer();
rmSync(dir, { recursive: true, force: true });
const memoryAtEnd = memory();

const seconds = (Date.now() - started) / 1_000;
const errors = [...stats.errors].map(([name, count]) => `${name} ${count}`).join(", ") || "none";
console.log(
  `faults:     ${stats.kills} SIGKILLs, ${stats.restarts} graceful restarts, ${stats.drops} dropped connections; ${stats.reconnects} reconnects`,
);
console.log(`issued:     ${stats.issued} (${Math.round(stats.issued / seconds)}/s)`);
console.log(`resolved:   ${stats.resolved}`);
console.log(`rejected:   ${stats.rejected} (${errors})`);
console.log(`unsettled:  ${unsettled}`);
console.log(
  `misrouted results: ${stats.misrouted}; non-idempotent calls run twice: ${stats.duplicates}; client pendingCount at end: ${pending}`,
);
console.log(`memory at start: ${memoryAtStart}`);
console.log(`memory at end:   ${memoryAtEnd}`);
const ok =
  unsettled === 0 &&
  stats.issued === stats.resolved + stats.rejected &&
  stats.misrouted === 0 &&
  stats.duplicates === 0 &&
  pending === 0;
console.log(ok ? "soak: OK" : "soak: FAILED");
process.exit(ok ? 0 : 1);
