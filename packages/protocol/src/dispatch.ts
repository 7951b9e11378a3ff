import {
  type ContractSide,
  type Definition,
  type HandlerContext,
  type OpenRpcDocument,
  toOpenRpc,
  type Validator,
  validator,
} from "@ezipc/contract";

/** A handler as the dispatcher sees it: untyped params in, a value or promise out. */
export type AnyHandler = (params: any, ctx: HandlerContext<any>) => unknown;

/** One entry of a dispatch table: a contract definition, its compiled validators and handler. */
export interface LocalEntry {
  readonly name: string;
  readonly kind: Definition["kind"];
  readonly params: Validator | undefined;
  readonly result: Validator | undefined;
  /** Progress values (methods that declare `progress`). */
  readonly progress: Validator | undefined;
  /** Stream items (streams). */
  readonly item: Validator | undefined;
  /** The contract definition it was compiled from. */
  readonly def: Definition;
  readonly handler: AnyHandler;
}

/**
 * The methods one side serves, looked up through a `Map` — never a plain object, so
 * `__proto__`, `constructor` or `toString` are unknown methods, not prototype members.
 */
export type DispatchTable = ReadonlyMap<string, LocalEntry>;

/** One entry of the remote table: what the other side serves, for checking our calls. */
export interface RemoteEntry {
  readonly name: string;
  readonly kind: Definition["kind"];
  readonly params: Validator | undefined;
  readonly result: Validator | undefined;
  /** Progress values (methods that declare `progress`). */
  readonly progress: Validator | undefined;
  /** Stream items (streams). */
  readonly item: Validator | undefined;
  /** The method name as a JSON string, encoded once for every request. */
  readonly quoted: string;
  /** The contract definition it was compiled from. */
  readonly def: Definition;
}

/** The methods the other side serves, compiled once. */
export type RemoteTable = ReadonlyMap<string, RemoteEntry>;

/**
 * Compiles one side of a contract and its handlers into a dispatch table, once (a server
 * shares it across connections). Throws `TypeError` when a handler is missing or is not a
 * function, so a broken server fails at start-up rather than on the first call.
 */
export function createDispatchTable(
  side: ContractSide,
  handlers: Readonly<Record<string, unknown>>,
  role = "handlers",
): DispatchTable {
  const table = new Map<string, LocalEntry>();
  for (const name of Object.keys(side)) {
    const def = side[name]!;
    const handler = Object.hasOwn(handlers, name) ? handlers[name] : undefined;
    if (typeof handler !== "function") {
      throw new TypeError(`${role}: "${name}" is in the contract but has no handler function`);
    }
    table.set(name, { ...compile(name, def as Definition), handler: handler as AnyHandler });
  }
  for (const name of Object.keys(handlers)) {
    if (!Object.hasOwn(side, name)) {
      throw new TypeError(`${role}: "${name}" has a handler but is not in the contract`);
    }
  }
  return table;
}

const remoteCache = new WeakMap<ContractSide, RemoteTable>();

/** Compiles the other side's half of a contract for outgoing calls; cached per side. */
export function createRemoteTable(side: ContractSide): RemoteTable {
  let table = remoteCache.get(side);
  if (table === undefined) {
    const map = new Map<string, RemoteEntry>();
    for (const name of Object.keys(side)) {
      const def = side[name]!;
      map.set(name, compile(name, def as Definition));
    }
    table = map;
    remoteCache.set(side, table);
  }
  return table;
}

/** Compiles the validators of one definition, once. */
function compile(name: string, def: Definition): RemoteEntry {
  return {
    name,
    kind: def.kind,
    params: def.params ? validator(def.params) : undefined,
    result: def.kind === "method" && def.result ? validator(def.result) : undefined,
    progress: def.kind === "method" && def.progress ? validator(def.progress) : undefined,
    item: def.kind === "stream" ? validator(def.item) : undefined,
    quoted: JSON.stringify(name),
    def,
  };
}

const discoveries = new WeakMap<DispatchTable, OpenRpcDocument>();

/** The OpenRPC document of what a dispatch table serves (`rpc.discover`), built once. */
export function describeTable(table: DispatchTable): OpenRpcDocument {
  let doc = discoveries.get(table);
  if (doc === undefined) {
    const side: Record<string, Definition> = {};
    for (const [name, entry] of table) side[name] = entry.def;
    doc = toOpenRpc(side as ContractSide);
    discoveries.set(table, doc);
  }
  return doc;
}
