import type { Adapter } from "./types.js";

/** One row of the benchmark. */
export interface Library {
  /** The name used by `--only`. */
  id: string;
  /** The row label in tables. */
  label: string;
  /** The npm package whose version is reported (none for RAW). */
  pkg: string | undefined;
  /** Whether the 10,000-idle-connection run is made for this row. */
  idle10k: boolean;
  /** Imported lazily, so a library that fails to load only fails its own row. */
  load(): Promise<Adapter>;
}

/** Every row, RAW first (the ratios' denominator). */
export const LIBRARIES: readonly Library[] = [
  {
    id: "raw",
    label: "RAW (floor)",
    pkg: undefined,
    idle10k: true,
    load: async () => (await import("./raw.js")).adapter,
  },
  {
    id: "ezipc",
    label: "ezipc",
    pkg: "ezipc",
    idle10k: true,
    load: async () => (await import("./ezipc.js")).adapter,
  },
  {
    id: "ezipc-novalidate",
    label: "ezipc (validate: false)",
    pkg: "ezipc",
    idle10k: false,
    load: async () => (await import("./ezipc.js")).adapterNoValidation,
  },
  {
    id: "birpc",
    label: "birpc",
    pkg: "birpc",
    idle10k: false,
    load: async () => (await import("./birpc.js")).adapter,
  },
  {
    id: "json-rpc-2.0",
    label: "json-rpc-2.0",
    pkg: "json-rpc-2.0",
    idle10k: false,
    load: async () => (await import("./json-rpc-2-0.js")).adapter,
  },
  {
    id: "capnweb",
    label: "capnweb",
    pkg: "capnweb",
    idle10k: false,
    load: async () => (await import("./capnweb.js")).adapter,
  },
  {
    id: "vscode-jsonrpc",
    label: "vscode-jsonrpc",
    pkg: "vscode-jsonrpc",
    idle10k: false,
    load: async () => (await import("./vscode-jsonrpc.js")).adapter,
  },
  {
    id: "grpc",
    label: "@grpc/grpc-js",
    pkg: "@grpc/grpc-js",
    idle10k: false,
    load: async () => (await import("./grpc.js")).adapter,
  },
];

/** Finds a row by id (`grpc-js` and `@grpc/grpc-js` are accepted for `grpc`). */
export function findLibrary(id: string): Library | undefined {
  const aliases: Record<string, string> = {
    "grpc-js": "grpc",
    "@grpc/grpc-js": "grpc",
    "json-rpc": "json-rpc-2.0",
    "ezipc-noval": "ezipc-novalidate",
    vscode: "vscode-jsonrpc",
  };
  const key = id.trim().toLowerCase();
  return LIBRARIES.find((lib) => lib.id === (aliases[key] ?? key));
}
