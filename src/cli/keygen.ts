/** `guestlink keygen FILE|-`: a new key for an agent reached over tcp: (docs/security.md). */
import type { Command } from "commander";
import { addGlobalOptions } from "./options.ts";

export function registerKeygen(program: Command): void {
  addGlobalOptions(program.command("keygen"))
    .description(
      "write a new random 32-byte key (64 hex digits) to FILE, which must not exist (mode 0600), or to stdout with -",
    )
    .argument("<file>", "where to write the key; - for stdout")
    .addHelpText(
      "after",
      `
Examples:
  guestlink keygen /etc/guestlink/key          # then: guestlink agent --listen tcp:0.0.0.0:7070 --key-file /etc/guestlink/key
  guestlink keygen - | ssh vm 'umask 077; cat > /etc/guestlink/key'`,
    )
    .action(async (file: string) => {
      const { newKeyText, writeNewKeyFile } = await import("../platform/key-file.ts");
      if (file === "-") process.stdout.write(newKeyText());
      else await writeNewKeyFile(file);
    });
}
