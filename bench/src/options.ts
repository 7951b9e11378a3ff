import { isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { findLibrary, LIBRARIES, type Library } from "./libs/index.js";

export type Transport = "unix" | "tcp";
/**
 * In the order they run (idle first: it wants a server that has served nobody else; onecore
 * last: it pins the bench to one core, and its servers are started while pinned).
 */
export const SCENARIOS = ["idle", "seq", "pipe", "large", "notify", "onecore"] as const;
export type Scenario = (typeof SCENARIOS)[number];

/** What one `pnpm bench` invocation does. */
export interface Options {
  runs: number;
  libraries: Library[];
  transports: Transport[];
  scenarios: Scenario[];
  quick: boolean;
  /** A step running longer than this is a "timeout" in its cell (ms). */
  limitMs: number;
  /** The markdown report's path (the SVG goes beside it), if one is wanted. */
  out: string | undefined;
  argv: string[];
  /** Measuring time per scenario after which a library stops short of the count (ms). */
  budgetMs: { seq: number; pipe: number; large: number; notify: number; onecore: number };
  counts: {
    seq: number;
    pipe: number;
    window: number;
    large: number;
    largeBytes: number;
    notify: number;
    idle: number;
    idle10k: number;
  };
}

/** The repository root: relative `--out` paths are taken from here, wherever pnpm runs us. */
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

export const USAGE = `Usage: pnpm bench [options]

  --runs N                 runs per scenario; medians are reported (default 3)
  --only a,b,...           libraries: ${LIBRARIES.map((l) => l.id).join(", ")}
                           (raw is always added: every figure is a ratio to it)
  --transport unix|tcp|both  (default both)
  --scenarios a,b,...      ${SCENARIOS.join(", ")} (default all; onecore is
                           seq with server and client pinned to one core, Linux)
  --quick                  1/10 of every count: a smoke run
  --no-budget              run every count in full (up to the 60 s limit per scenario);
                           by default a scenario stops short of its count after
                           2 s (seq), 2.5 s (pipe), 1.5 s (large, notify) of measuring
  --limit SECONDS          a step past this is reported as "timeout" (default 60)
  --out docs/benchmarks.md write the markdown report there and the SVG chart beside it
                           (relative to the repository root)
`;

function fail(message: string): never {
  process.stderr.write(`${message}\n\n${USAGE}`);
  process.exit(2);
}

export function parseOptions(argv: string[]): Options {
  let runs = 3;
  let only: string[] | undefined;
  let transport = "both";
  let scenarios: string[] = [...SCENARIOS];
  let quick = false;
  let budget = true;
  let limit = 60;
  let out: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] = arg.includes("=") ? arg.split("=", 2) : [arg, undefined];
    const value = () => inline ?? argv[++i] ?? fail(`${flag} needs a value`);
    switch (flag) {
      case "--":
        break;
      case "--runs":
        runs = Number(value());
        if (!Number.isInteger(runs) || runs < 1) fail("--runs must be a positive integer");
        break;
      case "--only":
        only = value().split(",").filter(Boolean);
        break;
      case "--transport":
        transport = value();
        break;
      case "--scenarios":
        scenarios = value().split(",").filter(Boolean);
        break;
      case "--quick":
        quick = true;
        break;
      case "--limit":
        limit = Number(value());
        if (!(limit > 0)) fail("--limit must be a positive number of seconds");
        break;
      case "--no-budget":
        budget = false;
        break;
      case "--out":
        out = value();
        break;
      case "-h":
      case "--help":
        process.stdout.write(USAGE);
        process.exit(0);
        break;
      default:
        fail(`unknown option ${arg}`);
    }
  }
  let libraries = [...LIBRARIES];
  if (only) {
    const picked = only.map((id) => findLibrary(id) ?? fail(`unknown library ${id}`));
    libraries = LIBRARIES.filter((lib) => lib.id === "raw" || picked.includes(lib));
  }
  const transports: Transport[] =
    transport === "both"
      ? ["unix", "tcp"]
      : transport === "unix" || transport === "tcp"
        ? [transport]
        : fail(`--transport must be unix, tcp or both`);
  for (const s of scenarios) {
    if (!(SCENARIOS as readonly string[]).includes(s)) fail(`unknown scenario ${s}`);
  }
  const scale = quick ? 10 : 1;
  return {
    runs,
    libraries,
    transports,
    scenarios: SCENARIOS.filter((s) => scenarios.includes(s)),
    quick,
    limitMs: limit * 1000,
    out: out === undefined ? undefined : isAbsolute(out) ? out : resolve(REPO_ROOT, out),
    argv,
    budgetMs: budget
      ? { seq: 2_000, pipe: 2_500, large: 1_500, notify: 1_500, onecore: 2_000 }
      : { seq: Infinity, pipe: Infinity, large: Infinity, notify: Infinity, onecore: Infinity },
    counts: {
      seq: 20_000 / scale,
      pipe: 200_000 / scale,
      window: 256,
      large: 200 / scale,
      largeBytes: 1024 * 1024,
      notify: 200_000 / scale,
      idle: 2_000 / scale,
      idle10k: 10_000 / scale,
    },
  };
}
