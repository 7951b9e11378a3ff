// Runs one job and shows its progress. As a library (`runJob`) it is what main.ts uses; as
// a program, `tsx client.ts <address> [items]` runs a job and Ctrl-C cancels it: the
// AbortController below is wired to SIGINT, the call rejects with AbortError at once, and
// the server's handler sees its ctx.signal abort.
import { fileURLToPath } from "node:url";
import { AbortError, type Client, connect, type InferResult } from "ezipc";
import { jobs } from "./contract.js";

type Jobs = typeof jobs.server;

/** A job's outcome: its result, or "cancelled". */
export type Outcome = InferResult<Jobs, "crunch"> | "cancelled";

/** Runs `crunch` on `client`, printing a progress line per step; resolves to the outcome. */
export async function runJob(
  client: Client<Jobs>,
  items: number,
  options: {
    signal?: AbortSignal;
    stepMs?: number;
    /** Milliseconds the job may take (its deadline travels to the server); `0`: no limit. */
    timeout?: number;
    onStep?: (done: number) => void;
  } = {},
): Promise<Outcome> {
  // On a terminal the bar redraws in place; piped, it prints one line per step.
  const inline = process.stdout.isTTY === true;
  try {
    return await client.call(
      "crunch",
      { items, ...(options.stepMs !== undefined && { stepMs: options.stepMs }) },
      {
        // Typed from the contract's progress schema: { done: number; total: number }.
        onProgress: ({ done, total }) => {
          const width = 20;
          const filled = Math.round((done / total) * width);
          const line = `progress ${done}/${total} [${"#".repeat(filled)}${".".repeat(width - filled)}]`;
          if (inline) process.stdout.write(`\r${line}`);
          else console.log(line);
          options.onStep?.(done);
        },
        // A long job: by default no timeout, the caller decides when to give up.
        timeout: options.timeout ?? 0,
        ...(options.signal && { signal: options.signal }),
      },
    );
  } catch (error) {
    if (error instanceof AbortError) return "cancelled";
    throw error;
  } finally {
    if (inline) process.stdout.write("\n");
  }
}

/** An AbortController that Ctrl-C (SIGINT) aborts, for as long as it is in use. */
export function abortOnCtrlC(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.once("SIGINT", onSigint);
  return { signal: controller.signal, dispose: () => process.off("SIGINT", onSigint) };
}

// Run as a program.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [address, items = "100"] = process.argv.slice(2);
  if (!address) throw new Error("usage: client.ts <address> [items]");
  const client = await connect(jobs, address);
  const ctrlC = abortOnCtrlC();
  console.log(`[client] running a job of ${items} items (Ctrl-C cancels)`);
  const outcome = await runJob(client, Number(items), { signal: ctrlC.signal });
  ctrlC.dispose();
  if (outcome === "cancelled") {
    console.log("[client] cancelled");
    process.exitCode = 130; // the shell's convention for "stopped by Ctrl-C"
  } else {
    console.log(`[client] result: ${JSON.stringify(outcome)}`);
  }
  await client.close();
}
