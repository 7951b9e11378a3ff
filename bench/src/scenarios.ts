import { setImmediate as turn } from "node:timers/promises";
import type { Child } from "./ipc.js";
import type { BenchClient, EchoParams } from "./libs/types.js";
import { percentile } from "./stats.js";

/** Set when a scenario ran past its hard limit: loops stop issuing work. */
export interface Stop {
  stopped: boolean;
}

/**
 * How much one scenario does: `count` operations, or fewer if `budgetMs` of measuring runs out
 * first (so one slow library cannot stretch the whole run; the count reached is reported).
 */
export interface Amount {
  count: number;
  budgetMs: number;
}

/** The figures one library reaches on one transport in one run. */
export interface Figures {
  seqRate?: number;
  seqP50?: number;
  seqP99?: number;
  seqCalls?: number;
  pipeRate?: number;
  pipeClientCpu?: number;
  pipeServerCpu?: number;
  pipeCalls?: number;
  largeRate?: number;
  largeCalls?: number;
  notifyRate?: number;
  notifyCalls?: number;
  oneRate?: number;
  oneP50?: number;
  oneP99?: number;
  oneCalls?: number;
  idleKib?: number;
  idle10kKib?: number;
  idle10kRssMib?: number;
}

const PARAMS: EchoParams = { a: 1, b: "hello" };
/** Warm-ups: a tenth of the count, at most this long. */
const WARM_MS = 500;

const now = () => process.hrtime.bigint();
const seconds = (from: bigint, to: bigint) => Number(to - from) / 1e9;
const deadline = (ms: number) => performance.now() + ms;

function check(result: EchoParams): void {
  if (result?.a !== 1 || result?.b !== "hello") {
    throw new Error(`echo returned ${JSON.stringify(result)?.slice(0, 80)}`);
  }
}

function checkStopped(stop: Stop): void {
  if (stop.stopped) throw new Error("stopped");
}

/** seq: one call at a time; calls/s and the latency of each call. */
export async function seq(client: BenchClient, amount: Amount, stop: Stop): Promise<Figures> {
  check(await client.echo(PARAMS));
  const warmEnd = deadline(WARM_MS);
  for (let i = 0; i < amount.count / 10 && performance.now() < warmEnd; i++) {
    checkStopped(stop);
    await client.echo(PARAMS);
  }
  const latencies = new Float64Array(amount.count);
  const end = deadline(amount.budgetMs);
  const start = now();
  let n = 0;
  while (n < amount.count) {
    checkStopped(stop);
    const t = now();
    await client.echo(PARAMS);
    latencies[n++] = Number(now() - t) / 1_000;
    if ((n & 63) === 0 && performance.now() > end) break;
  }
  const elapsed = seconds(start, now());
  const sample = latencies.subarray(0, n).sort();
  return {
    seqRate: n / elapsed,
    seqP50: percentile(sample, 50),
    seqP99: percentile(sample, 99),
    seqCalls: n,
  };
}

/** Keeps `window` calls in flight until `count` completed or the budget ran out; the count done. */
function pipeline(
  client: BenchClient,
  amount: Amount,
  window: number,
  stop: Stop,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const end = deadline(amount.budgetMs);
    let limit = amount.count;
    let sent = 0;
    let done = 0;
    let failed = false;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      reject(err);
    };
    const next = () => {
      if (sent >= limit || failed) return;
      if (stop.stopped) return fail(new Error("stopped"));
      // The clock is read once per 256 calls, so it costs every row the same nothing.
      if ((sent & 255) === 0 && sent > 0 && performance.now() > end) {
        limit = sent;
        if (done === limit) resolve(done);
        return;
      }
      sent++;
      client.echo(PARAMS).then(onDone, fail);
    };
    const onDone = () => {
      done++;
      if (done === limit) resolve(done);
      else next();
    };
    for (let i = 0; i < Math.min(window, limit); i++) next();
  });
}

/** pipe: `window` calls in flight; calls/s and CPU per call on both sides. */
export async function pipe(
  client: BenchClient,
  server: Child,
  amount: Amount,
  window: number,
  stop: Stop,
): Promise<Figures> {
  check(await client.echo(PARAMS));
  await pipeline(client, { count: Math.ceil(amount.count / 10), budgetMs: WARM_MS }, window, stop);
  const serverBefore = await server.request<number>("cpu");
  const clientBefore = process.cpuUsage();
  const start = now();
  const n = await pipeline(client, amount, window, stop);
  const elapsed = seconds(start, now());
  const clientCpu = process.cpuUsage(clientBefore);
  const serverAfter = await server.request<number>("cpu");
  return {
    pipeRate: n / elapsed,
    pipeClientCpu: (clientCpu.user + clientCpu.system) / n,
    pipeServerCpu: (serverAfter - serverBefore) / n,
    pipeCalls: n,
  };
}

/** The large scenario's payload: 1 MiB of ASCII (no escaping, one byte per character). */
export function payload(bytes: number): string {
  const unit = "abcdefghijklmnopqrstuvwxyz0123456789";
  // Flattened once here, so no row pays for V8 flattening a rope on its first send.
  return Buffer.from(
    unit.repeat(Math.ceil(bytes / unit.length)).slice(0, bytes),
    "latin1",
  ).toString("latin1");
}

/** large: sequential echoes of a big string; MiB of payload echoed per second. */
export async function large(
  client: BenchClient,
  amount: Amount,
  text: string,
  stop: Stop,
): Promise<Figures> {
  for (let i = 0; i < 2; i++) {
    const back = await client.echoText(text);
    if (back !== text) throw new Error(`echoText returned ${back.length} different chars`);
  }
  const end = deadline(amount.budgetMs);
  const start = now();
  let n = 0;
  while (n < amount.count) {
    checkStopped(stop);
    await client.echoText(text);
    n++;
    if (performance.now() > end) break;
  }
  const elapsed = seconds(start, now());
  return { largeRate: (n * Buffer.byteLength(text)) / (1024 * 1024) / elapsed, largeCalls: n };
}

/**
 * How far the client may run ahead of the server's count, in notifications. Without a bound the
 * client of a library with a slow receive path buries its server (grpc-js, some 60,000 messages
 * behind, falls to a few hundred a second). An application would flow-control that; so does this.
 */
const MAX_LAG = 8_192;
const LAG_CHECK_EVERY = 4_096;

/** Sends notifications, 256 per turn of the event loop, honouring backpressure; the count sent. */
async function sendTicks(
  client: BenchClient,
  server: Child,
  amount: Amount,
  stop: Stop,
): Promise<number> {
  const burst = 256;
  const end = deadline(amount.budgetMs);
  const pending: Promise<void>[] = [];
  let i = 0;
  while (i < amount.count) {
    checkStopped(stop);
    const last = Math.min(amount.count, i + burst);
    for (; i < last; i++) {
      const sent = client.tick(i);
      if (sent) pending.push(sent);
    }
    if (pending.length > 0) {
      await Promise.all(pending);
      pending.length = 0;
    }
    const drained = client.drained?.();
    if (drained) await drained;
    if (i % LAG_CHECK_EVERY === 0 && i > MAX_LAG) {
      await server.request("waitCount", { n: i - MAX_LAG });
    }
    if (performance.now() > end) break;
    await turn();
  }
  return i;
}

/** notify: notifications until the server has counted them all; messages/s. */
export async function notify(
  client: BenchClient,
  server: Child,
  amount: Amount,
  stop: Stop,
): Promise<Figures> {
  await server.request("reset");
  const warm = await sendTicks(
    client,
    server,
    { count: Math.ceil(amount.count / 10), budgetMs: WARM_MS },
    stop,
  );
  await server.request("waitCount", { n: warm });
  await server.request("reset");
  const start = now();
  const n = await sendTicks(client, server, amount, stop);
  await server.request<number>("waitCount", { n });
  const elapsed = seconds(start, now());
  return { notifyRate: n / elapsed, notifyCalls: n };
}
