import { readFileSync } from "node:fs";
import { cpus, type as osType, release, totalmem } from "node:os";
import { fileURLToPath } from "node:url";
import { fdLimit } from "./fd-limit.js";
import { LIBRARIES } from "./libs/index.js";
import type { Options, Transport } from "./options.js";
import type { Figures } from "./scenarios.js";
import { median } from "./stats.js";

/** One figure of one run: a number, or why there is none. */
export type Cell = number | { failure: "error" | "timeout"; message: string } | undefined;

/** Everything one library reached on one transport in one run. */
export interface Measurement {
  run: number;
  transport: Transport;
  lib: string;
  figures: Partial<Record<keyof Figures, Cell>>;
}

export interface ReportContext {
  options: Options;
  measurements: Measurement[];
  startedAt: Date;
  seconds: number;
  /** 1-minute load averages when the run started and ended (other work skews absolute figures). */
  load: [number, number];
}

type Failure = Exclude<Cell, number | undefined>;

interface Column {
  key: keyof Figures;
  title: string;
  better: "higher" | "lower";
  format(value: number): string;
}

const int = (v: number) => Math.round(v).toLocaleString("en-US");
const micro = (v: number) => (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : int(v));
const oneDecimal = (v: number) => (v < 100 ? v.toFixed(1) : int(v));

const COLUMNS: Column[] = [
  { key: "seqRate", title: "seq calls/s", better: "higher", format: int },
  { key: "seqP50", title: "seq p50 µs", better: "lower", format: micro },
  { key: "seqP99", title: "seq p99 µs", better: "lower", format: micro },
  { key: "pipeRate", title: "pipe calls/s", better: "higher", format: int },
  { key: "pipeClientCpu", title: "client CPU µs/call", better: "lower", format: micro },
  { key: "pipeServerCpu", title: "server CPU µs/call", better: "lower", format: micro },
  { key: "largeRate", title: "large MiB/s", better: "higher", format: oneDecimal },
  { key: "notifyRate", title: "notify msg/s", better: "higher", format: int },
  { key: "idleKib", title: "idle KiB/conn", better: "lower", format: oneDecimal },
];

const ONE_CORE_COLUMNS: Column[] = [
  { key: "oneRate", title: "calls/s", better: "higher", format: int },
  { key: "oneP50", title: "p50 µs", better: "lower", format: micro },
  { key: "oneP99", title: "p99 µs", better: "lower", format: micro },
];

const SCALE_COLUMNS: Column[] = [
  { key: "idle10kKib", title: "KiB/conn", better: "lower", format: oneDecimal },
  { key: "idle10kRssMib", title: "server RSS MiB", better: "lower", format: int },
];

interface Summary {
  value: number | undefined;
  ratio: number | undefined;
  ok: number;
  runs: number;
  failure: Failure | undefined;
}

/** Median over runs, and the median of the per-run ratios to RAW (same run, same transport). */
function summarize(
  measurements: Measurement[],
  transport: Transport,
  lib: string,
  key: keyof Figures,
): Summary | undefined {
  const values: number[] = [];
  const ratios: number[] = [];
  let failure: Failure | undefined;
  let runs = 0;
  for (const m of measurements) {
    if (m.transport !== transport || m.lib !== lib) continue;
    const cell = m.figures[key];
    if (cell === undefined) continue;
    runs++;
    if (typeof cell !== "number") {
      failure ??= cell;
      continue;
    }
    values.push(cell);
    const raw = measurements.find(
      (r) => r.run === m.run && r.transport === transport && r.lib === "raw",
    )?.figures[key];
    if (typeof raw === "number" && raw > 0) ratios.push(cell / raw);
  }
  if (runs === 0) return undefined;
  return {
    value: values.length > 0 ? median(values) : undefined,
    ratio: ratios.length > 0 ? median(ratios) : undefined,
    ok: values.length,
    runs,
    failure,
  };
}

const ratioText = (r: number) => `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}×`;

function cellText(summary: Summary | undefined, column: Column, isRaw: boolean): string {
  if (!summary) return "–";
  if (summary.value === undefined) return summary.failure?.failure ?? "error";
  let text = column.format(summary.value);
  if (!isRaw && summary.ratio !== undefined) text += ` (${ratioText(summary.ratio)})`;
  if (summary.ok < summary.runs) text += ` †${summary.ok}/${summary.runs}`;
  return text;
}

const TRANSPORT_TITLES: Record<Transport, string> = {
  unix: "Unix socket",
  tcp: "TCP loopback (127.0.0.1, Nagle off)",
};

function table(context: ReportContext, transport: Transport, all: Column[]): string[][] {
  const { options, measurements } = context;
  // Only the columns some row measured (`--scenarios` may have left some out).
  const columns = all.filter((c) =>
    options.libraries.some((lib) => summarize(measurements, transport, lib.id, c.key)),
  );
  const rows: string[][] = [
    ["library", ...columns.map((c) => `${c.title} ${c.better === "higher" ? "↑" : "↓"}`)],
  ];
  for (const lib of options.libraries) {
    const summaries = columns.map((c) => summarize(measurements, transport, lib.id, c.key));
    if (summaries.every((s) => s === undefined)) continue;
    rows.push([lib.label, ...summaries.map((s, i) => cellText(s, columns[i]!, lib.id === "raw"))]);
  }
  return rows;
}

/** One row per library and transport (the one-core and 10,000-connection tables). */
function transportRows(context: ReportContext, columns: Column[]): string[][] {
  const out: string[][] = [
    [
      "library",
      "transport",
      ...columns.map((c) => `${c.title} ${c.better === "higher" ? "↑" : "↓"}`),
    ],
  ];
  for (const transport of context.options.transports) {
    for (const lib of context.options.libraries) {
      const summaries = columns.map((c) =>
        summarize(context.measurements, transport, lib.id, c.key),
      );
      if (summaries.every((s) => s === undefined)) continue;
      out.push([
        lib.label,
        transport,
        ...summaries.map((s, i) => cellText(s, columns[i]!, lib.id === "raw")),
      ]);
    }
  }
  return out;
}

const scaleRows = (context: ReportContext) => transportRows(context, SCALE_COLUMNS);
const oneCoreRows = (context: ReportContext) => transportRows(context, ONE_CORE_COLUMNS);

function plainTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows
    .map((r, index) => {
      const line = r
        .map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
        .join("  ");
      return index === 0 ? `${line}\n${widths.map((w) => "-".repeat(w)).join("  ")}` : line;
    })
    .join("\n");
}

function markdownTable(rows: string[][]): string {
  const [head, ...body] = rows;
  const line = (r: string[]) => `| ${r.join(" | ")} |`;
  return [
    line(head!),
    `|${head!.map((_, i) => (i === 0 ? " --- " : " ---: ")).join("|")}|`,
    ...body.map(line),
  ].join("\n");
}

function failures(context: ReportContext): string[] {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const m of context.measurements) {
    for (const [key, cell] of Object.entries(m.figures)) {
      if (cell === undefined || typeof cell === "number") continue;
      const label = LIBRARIES.find((l) => l.id === m.lib)?.label ?? m.lib;
      const scenario = key
        .replace(/(Rate|P50|P99|ClientCpu|ServerCpu|Calls|Kib|RssMib)$/, "")
        .replace(/^one$/, "onecore");
      const line = `${label}, ${scenario}, ${m.transport}: ${cell.failure} — ${cell.message}`;
      if (seen.has(line)) continue;
      seen.add(line);
      lines.push(`${line} (run ${m.run})`);
    }
  }
  return lines;
}

/** Rows whose median measured count fell short of the scenario's count (the time budget). */
function shortCounts(context: ReportContext): string[] {
  const { options, measurements } = context;
  const scenarios = [
    ["seq", "seqCalls", options.counts.seq, options.budgetMs.seq],
    ["pipe", "pipeCalls", options.counts.pipe, options.budgetMs.pipe],
    ["large", "largeCalls", options.counts.large, options.budgetMs.large],
    ["notify", "notifyCalls", options.counts.notify, options.budgetMs.notify],
    ["onecore", "oneCalls", options.counts.seq, options.budgetMs.onecore],
  ] as const;
  const lines: string[] = [];
  for (const transport of options.transports) {
    for (const lib of options.libraries) {
      const parts: string[] = [];
      for (const [name, key, count, budget] of scenarios) {
        const measured = summarize(measurements, transport, lib.id, key)?.value;
        if (measured !== undefined && measured < count) {
          parts.push(`${name} ${int(measured)} of ${int(count)} (${budget / 1000} s)`);
        }
      }
      if (parts.length > 0) lines.push(`${lib.label}, ${transport}: ${parts.join("; ")}`);
    }
  }
  return lines;
}

const hasScale = (context: ReportContext) =>
  context.measurements.some((m) => m.figures.idle10kKib !== undefined);
const hasOneCore = (context: ReportContext) =>
  context.measurements.some((m) => typeof m.figures.oneRate === "number");

/** The tables printed to stdout at the end of a run. */
export function renderText(context: ReportContext): string {
  const parts: string[] = [""];
  for (const transport of context.options.transports) {
    parts.push(
      `== ${TRANSPORT_TITLES[transport]} — medians of ${context.options.runs} run(s); (×) = ratio to RAW`,
    );
    parts.push(plainTable(table(context, transport, COLUMNS)), "");
  }
  if (hasOneCore(context)) {
    parts.push("== seq with server and client on one core (onecore)");
    parts.push(plainTable(oneCoreRows(context)), "");
  }
  if (hasScale(context)) {
    parts.push(`== ${context.options.counts.idle10k.toLocaleString("en-US")} idle connections`);
    parts.push(plainTable(scaleRows(context)), "");
  }
  const short = shortCounts(context);
  if (short.length > 0)
    parts.push(
      "Stopped short of the count by the time budget (median count measured):",
      ...short.map((f) => `  ${f}`),
      "",
    );
  const failed = failures(context);
  if (failed.length > 0) parts.push("Failures:", ...failed.map((f) => `  ${f}`), "");
  return `${parts.join("\n")}\n`;
}

const BENCH_DIR = fileURLToPath(new URL("..", import.meta.url));

function version(pkg: string): string {
  try {
    const json = JSON.parse(
      readFileSync(`${BENCH_DIR}node_modules/${pkg}/package.json`, "utf8"),
    ) as {
      version?: string;
    };
    return json.version ?? "?";
  } catch {
    return "not installed";
  }
}

function machine(context: ReportContext): string[] {
  const cpu = cpus();
  return [
    `- CPU: ${cpu[0]?.model.trim() ?? "unknown"}, ${cpu.length} cores`,
    `- Memory: ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    `- OS: ${osType()} ${release()}`,
    `- Node.js: ${process.version}`,
    `- Open-file limit (bench process): ${fdLimit() ?? "unknown"}`,
    `- Load average (1 min) at start / end: ${context.load[0].toFixed(2)} / ${context.load[1].toFixed(2)}`,
  ];
}

function commandLine(options: Options): string {
  return ["pnpm bench", ...options.argv].join(" ");
}

/** The markdown report written to `--out`. */
export function renderMarkdown(context: ReportContext & { svgName: string }): string {
  const { options } = context;
  const c = options.counts;
  const n = (v: number) => v.toLocaleString("en-US");
  const b = options.budgetMs;
  const upTo = (count: number, budget: number) =>
    Number.isFinite(budget)
      ? `${n(count)} (or ${budget / 1000} s of measuring, if sooner)`
      : n(count);
  const out: string[] = [
    "# Benchmarks",
    "",
    `Generated by \`${commandLine(options)}\` on ${context.startedAt.toISOString().slice(0, 10)} (${Math.round(context.seconds)} s).`,
    `Medians of ${options.runs} run(s)${options.quick ? " of a **quick** run (1/10 of the counts: a smoke test, not a result)" : ""}.`,
    "In brackets: the ratio to RAW measured in the same run on the same transport (the median of",
    "the per-run ratios). ↑ higher is better, ↓ lower is better; a ratio above 1 is better for ↑",
    "columns and worse for ↓ ones. Absolute numbers drift on a shared machine; ratios hold.",
    "",
    `![Pipelined calls per second relative to RAW](${context.svgName})`,
    "",
  ];
  for (const transport of options.transports) {
    out.push(
      `## ${TRANSPORT_TITLES[transport]}`,
      "",
      markdownTable(table(context, transport, COLUMNS)),
      "",
    );
  }
  if (hasOneCore(context)) {
    out.push(
      "## One core",
      "",
      `The seq scenario again (${upTo(c.seq, b.onecore)} calls), with the bench and each server pinned`,
      "to the same CPU (`taskset`): no wake-up latency between two cores hides what each library",
      "costs per call.",
      "",
      markdownTable(oneCoreRows(context)),
      "",
    );
  }
  if (hasScale(context)) {
    out.push(
      `## ${n(c.idle10k)} idle connections`,
      "",
      `One server holding ${n(c.idle10k)} connections opened from a second process (one call each):`,
      "server RSS growth per connection and total server RSS, after a GC. Measured once, in the",
      "first run.",
      "",
      markdownTable(scaleRows(context)),
      "",
    );
  }
  const failed = failures(context);
  out.push(
    "## What each column measures",
    "",
    `- **seq**: ${upTo(c.seq, b.seq)} sequential \`echo({ a: 1, b: "hello" })\` calls; calls/s and per-call latency (p50, p99).`,
    `- **pipe**: ${upTo(c.pipe, b.pipe)} calls with ${c.window} in flight; calls/s, and CPU time per call of the client (the bench process) and of the server process.`,
    `- **large**: ${upTo(c.large, b.large)} sequential calls echoing a ${c.largeBytes / 2 ** 20} MiB string; MiB of payload echoed per second.`,
    `- **notify**: ${upTo(c.notify, b.notify)} notifications, timed until the server has counted all of them; messages/s.`,
    `- **onecore**: seq with server and client pinned to one CPU (Linux, \`taskset\`); calls/s, p50, p99.`,
    `- **idle**: server RSS growth per connection with ${n(c.idle)} idle connections opened (one call each) from a second process, after a GC.`,
    "",
    "The server runs in a child process, the client in the bench process (one core each).",
    `A cell reads \`error\` or \`timeout\` (over ${options.limitMs / 1000} s) where a library failed a scenario; † marks a`,
    "median over fewer runs than asked. See `bench/README.md` for the method and fairness notes;",
    "its note on the long-lived bench process explains pipelined ratios above 1 (RAW's pending",
    "`Map` costs it more in the bench process than in a fresh one).",
    "",
  );
  const short = shortCounts(context);
  if (short.length > 0) {
    out.push(
      "## Scenarios stopped short by the time budget",
      "",
      "To keep a full run near ten minutes, a scenario stops issuing work once its measuring time",
      "runs out, and its rate is taken over the operations completed (median count shown).",
      "`--no-budget` runs every count in full.",
      "",
      ...short.map((f) => `- ${f}`),
      "",
    );
  }
  if (failed.length > 0) out.push("## Failures", "", ...failed.map((f) => `- ${f}`), "");
  out.push("## Machine", "", ...machine(context), "");
  out.push("## Versions", "", "| package | version |", "| --- | --- |");
  const seen = new Set<string>();
  for (const lib of options.libraries) {
    if (!lib.pkg || seen.has(lib.pkg)) continue;
    seen.add(lib.pkg);
    out.push(`| ${lib.pkg} | ${version(lib.pkg)} |`);
  }
  out.push(`| zod | ${version("zod")} |`, "");
  out.push(
    "## How to re-run",
    "",
    "```sh",
    "pnpm install",
    "pnpm bench --out docs/benchmarks.md          # the full run (about 10 minutes on 2 cores)",
    "pnpm bench --quick --runs 1                  # a smoke run",
    "pnpm bench --only ezipc,birpc --transport unix",
    "pnpm bench --only ezipc --scenarios onecore   # one-core latency only",
    "```",
    "",
  );
  return out.join("\n");
}

const perSecond = (v: number) =>
  v >= 10_000
    ? `${Math.round(v / 1000).toLocaleString("en-US")}k/s`
    : `${(v / 1000).toFixed(1)}k/s`;

const escapeXml = (s: string) =>
  s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

/** The chart written beside the report: pipelined calls/s relative to RAW, per transport. */
export function renderSvg(context: ReportContext): string {
  const { options, measurements } = context;
  const colors: Record<Transport, string> = { unix: "#3b6fb6", tcp: "#e8892b" };
  const libs = options.libraries.filter((lib) =>
    options.transports.some((t) => summarize(measurements, t, lib.id, "pipeRate")),
  );
  const bars = libs.map((lib) =>
    options.transports.map((t) => ({
      transport: t,
      summary: summarize(measurements, t, lib.id, "pipeRate"),
    })),
  );
  const maxRatio = Math.max(1, ...bars.flat().map((b) => b.summary?.ratio ?? 0));
  const scaleMax = Math.ceil(maxRatio * 4) / 4;
  const left = 190;
  const plotWidth = 430;
  const barHeight = 14;
  const rowHeight = options.transports.length * (barHeight + 3) + 12;
  const top = 58;
  const width = left + plotWidth + 150;
  const height = top + libs.length * rowHeight + 52;
  const x = (ratio: number) => left + (ratio / scaleMax) * plotWidth;
  const el: string[] = [];
  el.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="16" y="24" font-size="15" font-weight="600" fill="#222">Pipelined calls/s relative to RAW (${options.counts.window} in flight; higher is better)</text>`,
  );
  let legendX = 16;
  for (const t of options.transports) {
    el.push(
      `<rect x="${legendX}" y="36" width="12" height="12" fill="${colors[t]}"/>`,
      `<text x="${legendX + 17}" y="46" fill="#333">${t === "unix" ? "Unix socket" : "TCP loopback"}</text>`,
    );
    legendX += 120;
  }
  const plotBottom = top + libs.length * rowHeight;
  for (let r = 0; r <= scaleMax + 1e-9; r += 0.25) {
    const gx = x(r).toFixed(1);
    const major = Math.abs(r - 1) < 1e-9;
    el.push(
      `<line x1="${gx}" y1="${top - 6}" x2="${gx}" y2="${plotBottom}" stroke="${major ? "#555" : "#e3e3e3"}" ${major ? 'stroke-dasharray="4 3"' : ""}/>`,
      `<text x="${gx}" y="${plotBottom + 16}" text-anchor="middle" fill="#666">${r.toFixed(2).replace(/0$/, "")}×</text>`,
    );
  }
  libs.forEach((lib, i) => {
    const y0 = top + i * rowHeight;
    el.push(
      `<text x="${left - 10}" y="${y0 + rowHeight / 2}" text-anchor="end" dominant-baseline="middle" fill="#222"${lib.id.startsWith("ezipc") ? ' font-weight="600"' : ""}>${escapeXml(lib.label)}</text>`,
    );
    bars[i]!.forEach((bar, j) => {
      const by = y0 + 4 + j * (barHeight + 3);
      const s = bar.summary;
      if (s?.ratio === undefined || s.value === undefined) {
        const what = s?.value === undefined ? (s?.failure?.failure ?? "not run") : "no RAW";
        el.push(`<text x="${left + 4}" y="${by + barHeight - 3}" fill="#b00">${what}</text>`);
        return;
      }
      const w = Math.max(1, x(s.ratio) - left);
      el.push(
        `<rect x="${left}" y="${by}" width="${w.toFixed(1)}" height="${barHeight}" fill="${colors[bar.transport]}"/>`,
        `<text x="${(left + w + 6).toFixed(1)}" y="${by + barHeight - 3}" fill="#333">${ratioText(s.ratio)} · ${perSecond(s.value)}</text>`,
      );
    });
  });
  const cpu = cpus();
  el.push(
    `<text x="16" y="${height - 12}" fill="#777" font-size="11">${escapeXml(`Medians of ${options.runs} run(s), ${context.startedAt.toISOString().slice(0, 10)} · ${cpu[0]?.model.trim() ?? "CPU"} × ${cpu.length} · Node ${process.version} · server in a child process · pnpm bench`)}</text>`,
    "</svg>",
  );
  return `${el.join("\n")}\n`;
}
