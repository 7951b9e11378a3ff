import { setImmediate as turn } from "node:timers/promises";
import type { Child } from "./ipc.js";
import type { BenchClient, EchoParams } from "./libs/types.js";
import { percentile } from "./stats.js";

/** Set when a scenario ran past its limit: loops stop issuing work. */
export interface Stop {
  stopped: boolean;
}

/** The figures one library reaches on one transport in one run. */
export interface Figures {
  seqRate?: number;
  seqP50?: number;
  seqP99?: number;
  pipeRate?: number;
  pipeClientCpu?: number;
  pipeServerCpu?: number;
  largeRate?: number;
  notifyRate?: number;
  idleKib?: number;
  idle10kKib?: number;
  idle10kRssMib?: number;
}

const PARAMS: EchoParams = { a: 1, b: "hello" };

const now = () => process.hrtime.bigint();
const seconds = (from: bigint, to: bigint) => Number(to - from) / 1e9;

function check(result: EchoParams): void {
  if (result?.a !== 1 || result?.b !== "hello") {
    throw new Error(`echo returned ${JSON.stringify(result)?.slice(0, 80)}`);
  }
}

function checkStopped(stop: Stop): void {
  if (stop.stopped) throw new Error("stopped");
}

/** seq: one call at a time; calls/s and the latency of each call. */
export async function seq(client: BenchClient, n: number, stop: Stop): Promise<Figures> {
  const warm = Math.max(100, Math.min(2_000, n / 10));
  for (let i = 0; i < warm; i++) {
    checkStopped(stop);
    check(await client.echo(PARAMS));
  }
  const latencies = new Float64Array(n);
  const start = now();
  for (let i = 0; i < n; i++) {
    if (stop.stopped) throw new Error("stopped");
    const t = now();
    await client.echo(PARAMS);
    latencies[i] = Number(now() - t) / 1_000;
  }
  const elapsed = seconds(start, now());
  latencies.sort();
  return { seqRate: n / elapsed, seqP50: percentile(latencies, 50), seqP99: percentile(latencies, 99) };
}

/** Keeps `window` calls in flight until `n` have completed. */
function pipeline(client: BenchClient, n: number, window: number, stop: Stop): Promise<void> {
  return new Promise((resolve, reject) => {
    let sent = 0;
    let done = 0;
    let failed = false;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      reject(err);
    };
    const next = () => {
      if (sent >= n || failed) return;
      if (stop.stopped) return fail(new Error("stopped"));
      sent++;
      client.echo(PARAMS).then(onDone, fail);
    };
    const onDone = () => {
      done++;
      if (done === n) resolve();
      else next();
    };
    for (let i = 0; i < Math.min(window, n); i++) next();
  });
}

/** pipe: `window` calls in flight; calls/s and CPU per call on both sides. */
export async function pipe(
  client: BenchClient,
  server: Child,
  n: number,
  window: number,
  stop: Stop,
): Promise<Figures> {
  check(await client.echo(PARAMS));
  await pipeline(client, Math.ceil(n / 10), window, stop);
  const serverBefore = await server.request<number>("cpu");
  const clientBefore = process.cpuUsage();
  const start = now();
  await pipeline(client, n, window, stop);
  const elapsed = seconds(start, now());
  const clientCpu = process.cpuUsage(clientBefore);
  const serverAfter = await server.request<number>("cpu");
  return {
    pipeRate: n / elapsed,
    pipeClientCpu: (clientCpu.user + clientCpu.system) / n,
    pipeServerCpu: (serverAfter - serverBefore) / n,
  };
}

/** The large scenario's payload: 1 MiB of ASCII (no escaping, one byte per character). */
export function payload(bytes: number): string {
  const unit = "abcdefghijklmnopqrstuvwxyz0123456789";
  return unit.repeat(Math.ceil(bytes / unit.length)).slice(0, bytes);
}

/** large: sequential echoes of a big string; MiB of payload echoed per second. */
export async function large(client: BenchClient, n: number, text: string, stop: Stop): Promise<Figures> {
  for (let i = 0; i < Math.max(2, n / 20); i++) {
    const back = await client.echoText(text);
    if (back.length !== text.length) throw new Error(`echoText returned ${back.length} chars`);
  }
  const start = now();
  for (let i = 0; i < n; i++) {
    checkStopped(stop);
    await client.echoText(text);
  }
  const elapsed = seconds(start, now());
  return { largeRate: (n * Buffer.byteLength(text)) / (1024 * 1024) / elapsed };
}

/** Sends n notifications, 256 per turn of the event loop, honouring backpressure. */
async function sendTicks(client: BenchClient, n: number, stop: Stop): Promise<void> {
  const burst = 256;
  const pending: Promise<void>[] = [];
  for (let i = 0; i < n; ) {
    checkStopped(stop);
    const end = Math.min(n, i + burst);
    for (; i < end; i++) {
      const sent = client.tick(i);
      if (sent) pending.push(sent);
    }
    if (pending.length > 0) {
      await Promise.all(pending);
      pending.length = 0;
    }
    const drained = client.drained?.();
    if (drained) await drained;
    await turn();
  }
}

/** notify: n notifications until the server has counted them all; messages/s. */
export async function notify(client: BenchClient, server: Child, n: number, stop: Stop): Promise<Figures> {
  const warm = Math.ceil(n / 10);
  await server.request("reset");
  await sendTicks(client, warm, stop);
  await server.request("waitCount", { n: warm });
  await server.request("reset");
  const start = now();
  const counted = server.request<number>("waitCount", { n }, 600_000);
  counted.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled
  await sendTicks(client, n, stop);
  await counted;
  const elapsed = seconds(start, now());
  return { notifyRate: n / elapsed };
}
