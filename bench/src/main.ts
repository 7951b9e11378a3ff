// `pnpm bench`: ezipc side by side with a raw-socket floor and peer RPC libraries.
// Each library's server runs in a child process, its client here; see bench/README.md.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { pinToOneCpu } from "./affinity.js";
import { BenchTimeout, Child, killAllChildren, withTimeout } from "./ipc.js";
import type { Library } from "./libs/index.js";
import type { Adapter, BenchClient, Endpoint } from "./libs/types.js";
import { type Options, parseOptions, REPO_ROOT, type Scenario, type Transport } from "./options.js";
import { type Cell, type Measurement, renderMarkdown, renderSvg, renderText } from "./report.js";
import { type Figures, large, notify, payload, pipe, type Stop, seq } from "./scenarios.js";

const log = (line: string) => process.stderr.write(`${line}\n`);

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** One server child of one library on one transport, and (once a scenario needs it) a client. */
/**
 * The server processes' flags. --expose-gc lets the idle scenario read RSS after a collection.
 * The young generation is fixed at its usual ceiling (16 MiB semi-spaces): V8 otherwise grows
 * it from 1 MiB as allocation picks up, and that step, some 12 MiB of RSS at once, would land
 * in whichever idle reading came after it. A busy server reaches that size anyway, so the
 * throughput scenarios run as they would by default.
 */
const SERVER_FLAGS = ["--expose-gc", "--min-semi-space-size=16", "--max-semi-space-size=16"];

interface Session {
  libId: string;
  server: Child;
  endpoint: Endpoint;
  adapter: Adapter;
  client: BenchClient | undefined;
}

async function openServer(lib: Library, transport: Transport, dir: string): Promise<Session> {
  const server = new Child("./server-child.ts", [lib.id, transport, dir], {
    nodeFlags: SERVER_FLAGS,
  });
  try {
    const { endpoint } = (await server.started) as { endpoint: Endpoint };
    return { libId: lib.id, server, endpoint, adapter: await lib.load(), client: undefined };
  } catch (err) {
    await server.kill();
    throw err;
  }
}

async function closeSession(session: Session): Promise<void> {
  if (session.client) {
    await withTimeout(session.client.close(), 5_000, "client close").catch(() => {});
  }
  await session.server.request("close", {}, 5_000).catch(() => {});
  await session.server.kill();
}

function failure(err: unknown): Cell {
  if (err instanceof BenchTimeout) return { failure: "timeout", message: err.message };
  const message = err instanceof Error ? err.message : String(err);
  return { failure: "error", message: message.split("\n")[0]!.slice(0, 200) };
}

type Step = Scenario | "idle10k";

const KEYS: Record<Step, (keyof Figures)[]> = {
  idle: ["idleKib"],
  idle10k: ["idle10kKib", "idle10kRssMib"],
  seq: ["seqRate", "seqP50", "seqP99", "seqCalls"],
  pipe: ["pipeRate", "pipeClientCpu", "pipeServerCpu", "pipeCalls"],
  large: ["largeRate", "largeCalls"],
  notify: ["notifyRate", "notifyCalls"],
  onecore: ["oneRate", "oneP50", "oneP99", "oneCalls"],
};

function describe(figures: Figures): string {
  const n = (v: number | undefined, digits = 0) =>
    v === undefined ? "" : v.toLocaleString("en-US", { maximumFractionDigits: digits });
  const parts: string[] = [];
  if (figures.seqRate !== undefined)
    parts.push(
      `${n(figures.seqRate)} calls/s, p50 ${n(figures.seqP50, 1)} µs, p99 ${n(figures.seqP99, 1)} µs (${n(figures.seqCalls)} calls)`,
    );
  if (figures.pipeRate !== undefined)
    parts.push(
      `${n(figures.pipeRate)} calls/s, CPU ${n(figures.pipeClientCpu, 2)} + ${n(figures.pipeServerCpu, 2)} µs/call (${n(figures.pipeCalls)} calls)`,
    );
  if (figures.largeRate !== undefined)
    parts.push(`${n(figures.largeRate, 1)} MiB/s (${n(figures.largeCalls)} calls)`);
  if (figures.notifyRate !== undefined)
    parts.push(`${n(figures.notifyRate)} msg/s (${n(figures.notifyCalls)} messages)`);
  if (figures.oneRate !== undefined)
    parts.push(
      `${n(figures.oneRate)} calls/s, p50 ${n(figures.oneP50, 1)} µs, p99 ${n(figures.oneP99, 1)} µs on one core (${n(figures.oneCalls)} calls)`,
    );
  if (figures.idleKib !== undefined) parts.push(`${n(figures.idleKib, 1)} KiB/conn`);
  if (figures.idle10kKib !== undefined)
    parts.push(`${n(figures.idle10kKib, 1)} KiB/conn, server RSS ${n(figures.idle10kRssMib)} MiB`);
  return parts.join("; ");
}

/**
 * Idle memory on a server nobody else is connected to: a second process opens n connections
 * (one call each, so every per-connection structure exists) and holds them; KiB of RSS each.
 */
async function idle(
  session: Session,
  n: number,
  limitMs: number,
): Promise<{ kib: number; rssMib: number }> {
  const { endpoint, fdLimit: serverFds } = (await session.server.started) as {
    endpoint: Endpoint;
    fdLimit: number | undefined;
  };
  const clients = new Child("./idle-child.ts", [session.libId, JSON.stringify(endpoint)]);
  try {
    const { fdLimit: clientFds } = (await clients.started) as { fdLimit: number | undefined };
    const need = n + 100;
    for (const [who, limit] of [
      ["server", serverFds],
      ["client", clientFds],
    ] as const) {
      if (limit !== undefined && limit < need) {
        throw new Error(
          `the ${who} process may open ${limit} files, under the ${need} needed; raise the hard limit (ulimit -Hn)`,
        );
      }
    }
    // One connection first, so what the first connection warms up (code, pools) is not counted.
    await clients.request("open", { n: 1 });
    const before = await session.server.request<{ rss: number; gc: boolean }>("memory");
    if (!before.gc) throw new Error("the server runs without --expose-gc");
    // n connections in all: ezipc's default maxConnections is exactly the 10,000 target.
    await clients.request("open", { n: n - 1 }, limitMs);
    const after = await session.server.request<{ rss: number }>("memory");
    return { kib: (after.rss - before.rss) / (n - 1) / 1024, rssMib: after.rss / (1024 * 1024) };
  } finally {
    await clients.kill();
  }
}

async function runStep(
  step: Step,
  session: Session,
  options: Options,
  text: string,
  stop: Stop,
): Promise<Figures> {
  const { counts, budgetMs } = options;
  if (step === "idle") return { idleKib: (await idle(session, counts.idle, options.limitMs)).kib };
  if (step === "idle10k") {
    const result = await idle(session, counts.idle10k, options.limitMs);
    return { idle10kKib: result.kib, idle10kRssMib: result.rssMib };
  }
  session.client ??= await session.adapter.connect(session.endpoint);
  const { client, server } = session as Session & { client: BenchClient };
  switch (step) {
    case "seq":
      return seq(client, { count: counts.seq, budgetMs: budgetMs.seq }, stop);
    case "pipe":
      return pipe(
        client,
        server,
        { count: counts.pipe, budgetMs: budgetMs.pipe },
        counts.window,
        stop,
      );
    case "large":
      return large(client, { count: counts.large, budgetMs: budgetMs.large }, text, stop);
    case "notify":
      return notify(client, server, { count: counts.notify, budgetMs: budgetMs.notify }, stop);
    case "onecore": {
      const f = await seq(client, { count: counts.seq, budgetMs: budgetMs.onecore }, stop);
      return {
        oneRate: f.seqRate!,
        oneP50: f.seqP50!,
        oneP99: f.seqP99!,
        oneCalls: f.seqCalls!,
      };
    }
  }
}

/** One library within a round: its live server (if any) and what it measured. */
interface Slot {
  lib: Library;
  session: Session | undefined;
  startFailure: Cell | undefined;
  figures: Measurement["figures"];
}

/**
 * One run on one transport. Steps go scenario by scenario, every library in turn, so RAW and
 * each library are measured close together in time (load from other work on the machine drifts
 * over minutes; the ratios should not). Each library keeps its server across the steps; the
 * idle step comes first, so its server has served nobody else. A step that fails or times out
 * ends that server, and the library's next step starts a fresh one.
 */
async function benchRound(
  run: number,
  transport: Transport,
  options: Options,
  dir: string,
  text: string,
  timedOut: Set<string>,
): Promise<Measurement[]> {
  const tag = `[run ${run}/${options.runs} ${transport}]`;
  const slots: Slot[] = options.libraries.map((lib) => ({
    lib,
    session: undefined,
    startFailure: undefined,
    figures: {},
  }));

  const runOne = async (slot: Slot, step: Step) => {
    const { lib, figures } = slot;
    // A step that timed out once is not given another full limit in later runs.
    const key = `${lib.id} ${transport} ${step}`;
    if (timedOut.has(key)) {
      const cell: Cell = {
        failure: "timeout",
        message: "timed out in an earlier run; not retried",
      };
      for (const k of KEYS[step]) figures[k] = cell;
      log(`${tag} ${lib.id} ${step}: skipped (timed out in an earlier run)`);
      return;
    }
    if (!slot.session && !slot.startFailure) {
      try {
        slot.session = await withTimeout(openServer(lib, transport, dir), options.limitMs, "start");
      } catch (err) {
        slot.startFailure = failure(err);
        log(`${tag} ${lib.id}: the server did not start: ${JSON.stringify(slot.startFailure)}`);
      }
    }
    const session = slot.session;
    if (!session) {
      for (const k of KEYS[step]) figures[k] = slot.startFailure;
      return;
    }
    const stop: Stop = { stopped: false };
    gc();
    const started = performance.now();
    try {
      const result = await withTimeout(
        runStep(step, session, options, text, stop),
        options.limitMs,
        step,
      );
      Object.assign(figures, result);
      const took = ((performance.now() - started) / 1000).toFixed(1);
      log(`${tag} ${lib.id} ${step}: ${describe(result)} [${took} s]`);
    } catch (err) {
      stop.stopped = true;
      const cell = failure(err);
      if (err instanceof BenchTimeout) timedOut.add(key);
      for (const k of KEYS[step]) figures[k] = cell;
      log(`${tag} ${lib.id} ${step}: ${JSON.stringify(cell)}`);
      await closeSession(session);
      slot.session = undefined;
    }
  };

  /**
   * seq again with server and client on one CPU, where the library's own cost is not hidden
   * behind the wake-up latency between two cores. Each library gets a server started while
   * the bench is pinned (a child inherits the CPU it may run on).
   */
  const oneCore = async () => {
    for (const slot of slots) {
      if (slot.session) await closeSession(slot.session);
      slot.session = undefined;
      slot.startFailure = undefined;
    }
    const pinned = pinToOneCpu();
    if (typeof pinned === "string") {
      log(`${tag} onecore: skipped, ${pinned}`);
      for (const slot of slots) {
        for (const k of KEYS.onecore) slot.figures[k] = { failure: "error", message: pinned };
      }
      return;
    }
    try {
      for (const slot of slots) {
        await runOne(slot, "onecore");
        if (slot.session) await closeSession(slot.session);
        slot.session = undefined;
      }
    } finally {
      pinned.restore();
    }
  };

  try {
    for (const step of options.scenarios) {
      if (step === "onecore") await oneCore();
      else for (const slot of slots) await runOne(slot, step);
    }
  } finally {
    for (const slot of slots) {
      if (slot.session) await closeSession(slot.session);
      slot.session = undefined;
    }
  }
  // The 10,000-connection figure is a capacity check, made once (in the first run), each on a
  // server of its own.
  if (options.scenarios.includes("idle") && run === 1) {
    for (const slot of slots) {
      if (!slot.lib.idle10k) continue;
      slot.startFailure = undefined;
      await runOne(slot, "idle10k");
      if (slot.session) await closeSession(slot.session);
      slot.session = undefined;
    }
  }
  return slots.map((slot) => ({ run, transport, lib: slot.lib.id, figures: slot.figures }));
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
  const loadAtStart = loadavg()[0]!;
  const t0 = performance.now();
  const text = payload(options.counts.largeBytes);
  const measurements: Measurement[] = [];
  log(
    `ezipc bench: ${options.libraries.map((l) => l.id).join(", ")} × ${options.transports.join(", ")} × ${options.runs} run(s)${options.quick ? " (quick: 1/10 counts)" : ""}`,
  );
  if (loadAtStart > cpus().length * 0.5) {
    log(
      `note: the machine is busy (load average ${loadAtStart.toFixed(1)} on ${cpus().length} cores); absolute figures will be noisy, ratios less so`,
    );
  }
  const timedOut = new Set<string>();
  for (let run = 1; run <= options.runs; run++) {
    for (const transport of options.transports) {
      measurements.push(...(await benchRound(run, transport, options, dir, text, timedOut)));
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  log(`done in ${seconds.toFixed(0)} s`);

  const context = {
    options,
    measurements,
    startedAt,
    seconds,
    load: [loadAtStart, loadavg()[0]!] as [number, number],
  };
  process.stdout.write(renderText(context));
  if (options.out) {
    const svgPath = options.out.replace(/\.md$/i, "") + ".svg";
    mkdirSync(dirname(options.out), { recursive: true });
    writeFileSync(
      options.out,
      renderMarkdown({ ...context, svgName: relative(dirname(options.out), svgPath) }),
    );
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
