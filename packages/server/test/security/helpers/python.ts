import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Cleanups } from "./cleanup.js";

/** The Python fixtures shared with the protocol package's handshake tests. */
export const FIXTURES = fileURLToPath(
  new URL("../../../../protocol/test/fixtures/", import.meta.url),
);

/** Every child ends itself after this long (the fixtures' watchdog), and we kill it at cleanup. */
const CHILD_LIFETIME_S = 15;

/** A CPython interpreter found on this machine. */
export interface Python {
  /** The real executable (not a pyenv shim, so that killing the child kills Python). */
  readonly path: string;
  readonly minor: number;
}

function probe(path: string | undefined): Python | undefined {
  if (path === undefined) return undefined;
  try {
    const out = execFileSync(
      path,
      ["-c", "import sys; print(sys.executable); print(sys.version_info[1])"],
      { encoding: "utf8", timeout: 10_000, stdio: ["ignore", "pipe", "ignore"] },
    );
    const [executable, minor] = out.trim().split("\n");
    return executable && minor ? { path: executable, minor: Number(minor) } : undefined;
  } catch {
    return undefined;
  }
}

function pyenvPython(minor: number): string | undefined {
  let root: string;
  try {
    root = execFileSync("pyenv", ["root"], {
      encoding: "utf8",
      timeout: 10_000,
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    root = process.env.PYENV_ROOT ?? join(homedir(), ".pyenv");
  }
  const versions = join(root, "versions");
  if (!existsSync(versions)) return undefined;
  const pattern = new RegExp(`^3\\.${minor}\\.(\\d+)$`);
  const newestFirst = readdirSync(versions)
    .filter((name) => pattern.test(name))
    .sort((a, b) => Number(pattern.exec(b)![1]) - Number(pattern.exec(a)![1]));
  for (const name of newestFirst) {
    const bin = join(versions, name, "bin", "python3");
    if (existsSync(bin)) return bin;
  }
  return undefined;
}

/**
 * The interpreters to prove interop with: `legacy` is a CPython ≤ 3.11 (HMAC-MD5 only; the
 * `python3` on PATH here, else a pyenv 3.11), `modern` every 3.12+ one that is installed.
 * A missing one is `undefined`, and its tests are skipped (never silently passed).
 */
export function findPythons(): {
  legacy: Python | undefined;
  modern: { minor: number; python: Python | undefined }[];
} {
  const onPath = probe("python3");
  const legacy = onPath && onPath.minor <= 11 ? onPath : probe(pyenvPython(11));
  const modern = [12, 13].map((minor) => ({
    minor,
    python: onPath?.minor === minor ? onPath : probe(pyenvPython(minor)),
  }));
  return { legacy, modern };
}

/** ezipc's `tcp://host:port` / `unix:/path` in the fixtures' `tcp:host:port` / `unix:/path` form. */
export function fixtureAddress(address: string): string {
  const tcp = /^tcp:\/\/(.+):(\d+)$/.exec(address);
  return tcp ? `tcp:${tcp[1]}:${tcp[2]}` : address;
}

/** The fixtures' `tcp:host:port` / `unix:/path` in ezipc's form. */
export function ezipcAddress(address: string): string {
  const tcp = /^tcp:(.+):(\d+)$/.exec(address);
  return tcp ? `tcp://${tcp[1]}:${tcp[2]}` : address;
}

/** A Python fixture as a child process: its stdout lines can be awaited, its exit code too. */
export class PythonProcess {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  #stdout = "";
  #stderr = "";
  #waiters: { prefix: string; resolve(line: string): void; reject(error: Error): void }[] = [];
  readonly #child: ChildProcess;
  readonly #fixture: string;

  constructor(
    cleanups: Cleanups,
    python: Python,
    fixture: string,
    args: string[],
    key: string | undefined,
  ) {
    this.#fixture = fixture;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      EZIPC_FIXTURE_TIMEOUT: String(CHILD_LIFETIME_S),
      PYTHONDONTWRITEBYTECODE: "1",
    };
    if (key === undefined) delete env.EZIPC_AUTHKEY;
    else env.EZIPC_AUTHKEY = key;
    this.#child = spawn(python.path, [join(FIXTURES, fixture), ...args], {
      env,
      stdio: ["ignore", "pipe", "pipe"],
      timeout: (CHILD_LIFETIME_S + 5) * 1000,
      killSignal: "SIGKILL",
    });
    this.#child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      this.#stdout += chunk;
      let newline = this.#stdout.indexOf("\n");
      while (newline !== -1) {
        this.#line(this.#stdout.slice(0, newline));
        this.#stdout = this.#stdout.slice(newline + 1);
        newline = this.#stdout.indexOf("\n");
      }
    });
    this.#child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
      this.#stderr += chunk;
    });
    this.exited = new Promise((resolve) => {
      this.#child.on("close", (code) => {
        for (const waiter of this.#waiters.splice(0)) {
          waiter.reject(
            new Error(
              `${fixture} exited (${code}) before printing "${waiter.prefix}…"; ` +
                `stdout: ${JSON.stringify(this.lines)}; stderr: ${this.#stderr}`,
            ),
          );
        }
        resolve(code);
      });
    });
    cleanups.add(this, async (child) => {
      child.kill();
      await child.exited;
    });
  }

  /** What the child wrote to stderr so far. */
  get stderr(): string {
    return this.#stderr;
  }

  /** Kills the child if it still runs (SIGKILL: the fixtures hold no state worth a clean exit). */
  kill(): void {
    if (this.#child.exitCode === null && this.#child.signalCode === null) {
      this.#child.kill("SIGKILL");
    }
  }

  /** The first line (already printed or still to come) that starts with `prefix`. */
  line(prefix: string): Promise<string> {
    const seen = this.lines.find((line) => line.startsWith(prefix));
    if (seen !== undefined) return Promise.resolve(seen);
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) {
      return Promise.reject(
        new Error(`${this.#fixture} exited before printing "${prefix}…": ${this.#stderr}`),
      );
    }
    return new Promise((resolve, reject) => this.#waiters.push({ prefix, resolve, reject }));
  }

  /** Resolves once the child exited, with its code, stdout lines and stderr. */
  async result(): Promise<{ code: number | null; lines: string[]; stderr: string }> {
    const code = await this.exited;
    return { code, lines: this.lines, stderr: this.#stderr };
  }

  #line(line: string): void {
    this.lines.push(line);
    const matched = this.#waiters.filter((waiter) => line.startsWith(waiter.prefix));
    this.#waiters = this.#waiters.filter((waiter) => !matched.includes(waiter));
    for (const waiter of matched) waiter.resolve(line);
  }
}
