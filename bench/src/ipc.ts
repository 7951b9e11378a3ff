import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

// Parent ↔ child control messages over Node's IPC channel (never over the socket under test).
// A request is `{ id, op, ...args }`; the answer is `{ id, ok, value | error }`. The child's
// start-up report is the answer to id 0.

interface Reply {
  id: number;
  ok: boolean;
  value?: unknown;
  error?: string;
}

/** Thrown when a bench step runs past its time limit. */
export class BenchTimeout extends Error {
  override name = "BenchTimeout";
}

/** Races a promise against a time limit. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new BenchTimeout(`${what}: over ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

const live = new Set<ChildProcess>();

/** Kills every child still running (synchronously, so it works from an `exit` handler). */
export function killAllChildren(): void {
  for (const child of live) child.kill("SIGKILL");
  live.clear();
}

/** A child process speaking the control protocol. */
export class Child {
  readonly process: ChildProcess;
  /** Resolves with the child's start-up value (answer 0). */
  readonly started: Promise<unknown>;
  private nextId = 1;
  private readonly waiting = new Map<
    number,
    { resolve(v: unknown): void; reject(e: Error): void }
  >();
  private exitError: Error | undefined;

  constructor(entry: string, args: string[], options: { nodeFlags?: string[] } = {}) {
    // The bench's own --conditions (ezipc-dist: the built JavaScript, as users run it)
    // apply to the server children too.
    const conditions = process.execArgv.filter((a) => a.startsWith("--conditions"));
    const nodeArgs = [...conditions, "--import", "tsx", ...(options.nodeFlags ?? [])];
    const script = fileURLToPath(new URL(entry, import.meta.url));
    // Through `sh` so the child can lift its open-file limit as far as the hard limit allows
    // (the idle scenario holds 10,000 sockets). `exec` keeps the IPC channel and the pid.
    const lift = 'ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"';
    const command = process.platform === "win32" ? process.execPath : "/bin/sh";
    const argv = [...nodeArgs, script, ...args];
    const fullArgs =
      process.platform === "win32" ? argv : ["-c", lift, "sh", process.execPath, ...argv];
    this.process = spawn(command, fullArgs, {
      cwd: fileURLToPath(new URL("..", import.meta.url)),
      stdio: ["ignore", "inherit", "inherit", "ipc"],
    });
    live.add(this.process);
    let resolveStart: (v: unknown) => void = () => {};
    let rejectStart: (e: Error) => void = () => {};
    this.started = new Promise((resolve, reject) => {
      resolveStart = resolve;
      rejectStart = reject;
    });
    this.started.catch(() => {});
    this.waiting.set(0, { resolve: resolveStart, reject: rejectStart });
    this.process.on("message", (raw) => {
      const reply = raw as Reply;
      const entry = this.waiting.get(reply.id);
      if (!entry) return;
      this.waiting.delete(reply.id);
      if (reply.ok) entry.resolve(reply.value);
      else entry.reject(new Error(reply.error ?? "child failed"));
    });
    this.process.on("exit", (code, signal) => {
      live.delete(this.process);
      this.exitError = new Error(`child exited (${signal ?? code})`);
      for (const entry of this.waiting.values()) entry.reject(this.exitError);
      this.waiting.clear();
    });
  }

  /** Sends a control request and waits for its answer. */
  request<T>(op: string, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<T> {
    if (this.exitError) return Promise.reject(this.exitError);
    const id = this.nextId++;
    const answer = new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      // The channel may close between the check above and here: that is a failed request.
      const failed = (err: Error | null) => {
        if (!err) return;
        this.waiting.delete(id);
        reject(err);
      };
      try {
        this.process.send({ id, op, ...args }, failed);
      } catch (err) {
        failed(err as Error);
      }
    });
    return withTimeout(answer, timeoutMs, `child ${op}`);
  }

  /** Ends the child and waits for it to be gone. */
  kill(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null)
      return Promise.resolve();
    return new Promise((resolve) => {
      this.process.once("exit", () => resolve());
      this.process.kill("SIGKILL");
    });
  }
}

type Handler = (msg: Record<string, unknown>) => unknown;

/**
 * Child side: answers control requests with the given handlers, reports start-up with the
 * value of `start` (or its error), and exits when the parent goes away.
 */
export function serveControl(
  start: () => Promise<unknown>,
  handlers: Record<string, Handler>,
): void {
  const send = (reply: Reply) => process.send?.(reply);
  process.on("disconnect", () => process.exit(0));
  process.on("message", (raw) => {
    const msg = raw as { id: number; op: string } & Record<string, unknown>;
    const handler = handlers[msg.op];
    if (!handler) {
      send({ id: msg.id, ok: false, error: `unknown op ${msg.op}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(msg))
      .then(
        (value) => send({ id: msg.id, ok: true, value }),
        (err: unknown) => send({ id: msg.id, ok: false, error: String(err) }),
      );
  });
  start().then(
    (value) => send({ id: 0, ok: true, value }),
    (err: unknown) =>
      send({
        id: 0,
        ok: false,
        error: err instanceof Error ? (err.stack ?? err.message) : String(err),
      }),
  );
}
