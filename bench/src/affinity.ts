import { execFileSync } from "node:child_process";

// The onecore scenario pins the bench process (every thread) to one CPU with `taskset`; the
// server children it starts while pinned inherit that. Linux only.

/** A pinning in force, until `restore` puts back the CPUs the process had before. */
export interface Pinned {
  cpu: number;
  restore(): void;
}

const taskset = (args: string[]) =>
  execFileSync("taskset", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

/**
 * Pins every thread of this process to the first CPU it may run on. Returns the pinning, or
 * why it cannot pin (not Linux, no `taskset`).
 */
export function pinToOneCpu(): Pinned | string {
  if (process.platform !== "linux") return "needs Linux (taskset)";
  const pid = String(process.pid);
  let list = "";
  let cpu: number;
  try {
    // "pid 123's current affinity list: 0,1" (or "0-3")
    list = /list:\s*(\S+)/.exec(taskset(["-c", "-p", pid]))?.[1] ?? "";
    cpu = Number(/^\d+/.exec(list)?.[0]);
    if (!Number.isInteger(cpu)) return `cannot read this process's CPU list from taskset (${list})`;
    // May be refused (a container without sched_setaffinity): a reason, not a crash.
    taskset(["-a", "-c", "-p", String(cpu), pid]);
  } catch (err) {
    // A refusal part-way through may have pinned some threads: put them back.
    if (list !== "") {
      try {
        taskset(["-a", "-c", "-p", list, pid]);
      } catch {
        // Nothing more to do; the reason below says what failed.
      }
    }
    return `taskset failed: ${(err as Error).message.split("\n")[0]}`;
  }
  return {
    cpu,
    restore: () => {
      taskset(["-a", "-c", "-p", list, pid]);
    },
  };
}
