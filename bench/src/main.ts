// `pnpm bench`: ezipc side by side with a raw-socket floor and peer RPC libraries.
// Each library's server runs in a child process, its client here; see bench/README.md.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { BenchTimeout, Child, killAllChildren, withTimeout } from "./ipc.js";
import type { Library } from "./libs/index.js";
import type { Adapter, BenchClient, Endpoint } from "./libs/types.js";
import { type Options, parseOptions, REPO_ROOT, type Scenario, type Transport } from "./options.js";
import { type Cell, type Measurement, renderMarkdown, renderSvg, renderText } from "./report.js";
import { type Figures, large, notify, payload, pipe, type Stop, seq } from "./scenarios.js";

/** A bench step past this is a "timeout" in its cell (the bound). */
const SCENARIO_LIMIT_MS = 60_000;

const log = (line: string) => process.stderr.write(`${line}\n`);

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

interface Session {
  server: Child;
  client: BenchClient;
}

async function openSession(lib: Library, transport: Transport, dir: string): Promise<Session> {
  const server = new Child("./server-child.ts", [lib.id, transport, dir]);
  try {
    const { endpoint } = (await server.started) as { endpoint: Endpoint };
    const adapter: Adapter = await lib.load();
    const client = await adapter.connect(endpoint);
    return { server, client };
  } catch (err) {
    await server.kill();
    throw err;
  }
}

async function closeSession(session: Session): Promise<void> {
  await withTimeout(session.client.close(), 5_000, "client close").catch(() => {});
  await session.server.request("close", {}, 5_000).catch(() => {});
  await session.server.kill();
}

function failure(err: unknown): Cell {
  if (err instanceof BenchTimeout) return { failure: "timeout", message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { failure: "error", message: message.split("\n")[0]!.slice(0, 200) };
}

const KEYS: Record<Exclude<Scenario, "idle">, (keyof Figures)[]> = {
  seq: ["seqRate", "seqP50", "seqP99"],
  pipe: ["pipeRate", "pipeClientCpu", "pipeServerCpu"],
  large: ["largeRate"],
  notify: ["notifyRate"],
};

function describe(figures: Figures): string {
  const n = (v: number | undefined, digits = 0) =>
    v === undefined ? "" : v.toLocaleString("en-US", { maximumFractionDigits: digits });
  const parts: string[] = [];
  if (figures.seqRate !== undefined)
    parts.push(`${n(figures.seqRate)} calls/s, p50 ${n(figures.seqP50, 1)} µs, p99 ${n(figures.seqP99, 1)} µs`);
  if (figures.pipeRate !== undefined)
    parts.push(
      `${n(figures.pipeRate)} calls/s, CPU ${n(figures.pipeClientCpu, 2)} + ${n(figures.pipeServerCpu, 2)} µs/call`,
    );
  if (figures.largeRate !== undefined) parts.push(`${n(figures.largeRate, 1)} MiB/s`);
  if (figures.notifyRate !== undefined) parts.push(`${n(figures.notifyRate)} msg/s`);
  return parts.join("; ");
}

async function runScenario(
  scenario: Exclude<Scenario, "idle">,
  session: Session,
  options: Options,
  text: string,
  stop: Stop,
): Promise<Figures> {
  const { counts } = options;
  switch (scenario) {
    case "seq":
      return seq(session.client, counts.seq, stop);
    case "pipe":
      return pipe(session.client, session.server, counts.pipe, counts.window, stop);
    case "large":
      return large(session.client, counts.large, text, stop);
    case "notify":
      return notify(session.client, session.server, counts.notify, stop);
  }
}

/** Idle memory: a fresh server, a second process holding n connections; KiB of RSS each. */
async function idle(
  lib: Library,
  transport: Transport,
  dir: string,
  n: number,
): Promise<{ kib: number; rssMib: number }> {
  const server = new Child("./server-child.ts", [lib.id, transport, dir], { exposeGc: true });
  let clients: Child | undefined;
  try {
    const { endpoint, fdLimit: serverFds } = (await server.started) as {
      endpoint: Endpoint;
      fdLimit: number | undefined;
    };
    clients = new Child("./idle-child.ts", [lib.id, JSON.stringify(endpoint)]);
    const { fdLimit: clientFds } = (await clients.started) as { fdLimit: number | undefined };
    const need = n + 100;
    for (const [who, limit] of [
      ["server", serverFds],
      ["client", clientFds],
    ] as const) {
      if (limit !== undefined && limit < need) {
        throw new Error(`open-file limit of the ${who} process is ${limit}, under ${need}; raise the hard limit (ulimit -Hn)`);
      }
    }
    // One connection first, so code paths and pools it warms up are not counted per connection.
    await clients.request("open", { n: 1 });
    const before = await server.request<{ rss: number; gc: boolean }>("memory");
    if (!before.gc) throw new Error("server ran without --expose-gc");
    // n connections in all (ezipc's default maxConnections is exactly the 10,000 target).
    await clients.request("open", { n: n - 1 }, SCENARIO_LIMIT_MS);
    const after = await server.request<{ rss: number }>("memory");
    return { kib: (after.rss - before.rss) / (n - 1) / 1024, rssMib: after.rss / (1024 * 1024) };
  } finally {
    await clients?.kill();
    await server.kill();
  }
}

async function benchLibrary(
  lib: Library,
  transport: Transport,
  options: Options,
  dir: string,
  text: string,
  tag: string,
): Promise<Measurement["figures"]> {
  const figures: Measurement["figures"] = {};
  const main = options.scenarios.filter((s): s is Exclude<Scenario, "idle"> => s !== "idle");
  let session: Session | undefined;
  let startFailure: Cell | undefined;
  for (const scenario of main) {
    const keys = KEYS[scenario];
    if (!session && !startFailure) {
      try {
        session = await withTimeout(openSession(lib, transport, dir), SCENARIO_LIMIT_MS, "start");
      } catch (err) {
        startFailure = failure(err);
        log(`${tag} ${lib.id}: could not start: ${(startFailure as { message: string }).message}`);
      }
    }
    if (!session) {
      for (const key of keys) figures[key] = startFailure;
      continue;
    }
    const stop: Stop = { stopped: false };
    gc();
    const started = performance.now();
    try {
      const result = await withTimeout(
        runScenario(scenario, session, options, text, stop),
        SCENARIO_LIMIT_MS,
        scenario,
      );
      Object.assign(figures, result);
      log(`${tag} ${lib.id} ${scenario}: ${describe(result)} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
    } catch (err) {
      stop.stopped = true;
      const cell = failure(err);
      for (const key of keys) figures[key] = cell;
      log(`${tag} ${lib.id} ${scenario}: ${JSON.stringify(cell)}`);
      // A failed scenario may leave the connection in any state: the next one starts afresh.
      await closeSession(session);
      session = undefined;
    }
  }
  if (session) await closeSession(session);

  if (options.scenarios.includes("idle")) {
    const runs: [number, keyof Figures, keyof Figures | undefined][] = [
      [options.counts.idle, "idleKib", undefined],
    ];
    if (lib.idle10k) runs.push([options.counts.idle10k, "idle10kKib", "idle10kRssMib"]);
    for (const [n, kibKey, rssKey] of runs) {
      const started = performance.now();
      try {
        const result = await withTimeout(idle(lib, transport, dir, n), SCENARIO_LIMIT_MS, `idle ${n}`);
        figures[kibKey] = result.kib;
        if (rssKey) figures[rssKey] = result.rssMib;
        log(
          `${tag} ${lib.id} idle ×${n}: ${result.kib.toFixed(1)} KiB/conn, server RSS ${result.rssMib.toFixed(0)} MiB (${((performance.now() - started) / 1000).toFixed(1)} s)`,
        );
      } catch (err) {
        const cell = failure(err);
        figures[kibKey] = cell;
        if (rssKey) figures[rssKey] = cell;
        log(`${tag} ${lib.id} idle ×${n}: ${JSON.stringify(cell)}`);
      }
    }
  }
  return figures;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const dir = mkdtempSync(join(tmpdir(), "ezipc-bench-"));
  const cleanup = () => {
    killAllChildren();
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", cleanup);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      cleanup();
      process.exit(130);
    });
  }
  // A library that throws from a socket callback fails its own cell (by timeout), not the run.
  process.on("uncaughtException", (err) => log(`uncaught: ${err.stack ?? err}`));
  process.on("unhandledRejection", (err) => log(`unhandled rejection: ${String(err)}`));

  const startedAt = new Date();
  const t0 = performance.now();
  const text = payload(options.counts.largeBytes);
  const measurements: Measurement[] = [];
  log(
    `ezipc bench: ${options.libraries.map((l) => l.id).join(", ")} × ${options.transports.join(", ")} × ${options.runs} run(s)${options.quick ? " (quick: 1/10 counts)" : ""}`,
  );
  for (let run = 1; run <= options.runs; run++) {
    for (const transport of options.transports) {
      for (const lib of options.libraries) {
        const tag = `[run ${run}/${options.runs} ${transport}]`;
        const figures = await benchLibrary(lib, transport, options, dir, text, tag);
        measurements.push({ run, transport, lib: lib.id, figures });
      }
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  log(`done in ${seconds.toFixed(0)} s`);

  const context = { options, measurements, startedAt, seconds };
  process.stdout.write(renderText(context));
  if (options.out) {
    const svgPath = options.out.replace(/\.md$/i, "") + ".svg";
    mkdirSync(dirname(options.out), { recursive: true });
    writeFileSync(options.out, renderMarkdown({ ...context, svgName: relative(dirname(options.out), svgPath) }));
    writeFileSync(svgPath, renderSvg(context));
    log(`wrote ${relative(REPO_ROOT, options.out)} and ${relative(REPO_ROOT, svgPath)}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    log(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
