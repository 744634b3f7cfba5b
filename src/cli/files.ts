/** `guestlink get` and `guestlink put`: files of any size, sha256-checked, written atomically. */
import { performance } from "node:perf_hooks";
import type { Command } from "commander";
import { getFile, putFile } from "../controller/files.ts";
import { agentCommand, connectAgent, formatBytes, printJson } from "./common.ts";
import { Progress } from "./progress.ts";

interface TransferOptions {
  json?: boolean;
  connectTimeout: number;
}

async function transfer(
  direction: "get" | "put",
  address: string,
  from: string,
  to: string,
  opts: TransferOptions,
): Promise<void> {
  const session = await connectAgent(address, opts);
  const progress = new Progress(
    direction === "get" ? `get ${from}` : `put ${to}`,
    !opts.json && Boolean(process.stderr.isTTY),
  );
  const start = performance.now();
  try {
    const onProgress = (bytes: number, total?: number) => progress.update(bytes, total);
    const result =
      direction === "get"
        ? await getFile(session, from, to, { onProgress })
        : await putFile(session, from, to, { onProgress });
    progress.done();
    const seconds = (performance.now() - start) / 1000;
    if (opts.json) {
      printJson({ direction, from, to, ...result, seconds, bytesPerSecond: result.size / seconds });
    } else {
      process.stdout.write(
        `${direction === "get" ? `${address}:${from} -> ${to}` : `${from} -> ${address}:${to}`}  ${formatBytes(result.size)} in ${seconds.toFixed(2)} s (${formatBytes(result.size / seconds)}/s), sha256 ${result.sha256}, mode ${result.mode.toString(8)}\n`,
      );
    }
  } finally {
    await session.close();
  }
}

export function registerFiles(program: Command): void {
  agentCommand(
    program,
    "get",
    "copy a file from the agent (sha256-checked, written atomically, mode kept)",
  )
    .argument("<remote>", "the file in the agent")
    .argument("<local>", "where to write it here")
    .addHelpText(
      "after",
      "\nExamples:\n  guestlink get unix:/run/guestlink.sock /var/log/syslog ./syslog\n",
    )
    .action((address: string, remote: string, local: string, opts: TransferOptions) =>
      transfer("get", address, remote, local, opts),
    );
  agentCommand(
    program,
    "put",
    "copy a file to the agent (sha256-checked, written atomically, mode kept)",
  )
    .argument("<local>", "the file here")
    .argument("<remote>", "where to write it in the agent")
    .addHelpText(
      "after",
      "\nExamples:\n  guestlink put unix:/run/guestlink.sock ./build.tar /tmp/build.tar\n",
    )
    .action((address: string, local: string, remote: string, opts: TransferOptions) =>
      transfer("put", address, local, remote, opts),
    );
}
