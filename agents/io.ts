/**
 * Where CLI commands write and read, as a value: the real process by default, a recorder in tests,
 * so commands can be exercised in-process without spawning.
 */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  readStdin(): Promise<string>;
  /** Exit status for when the command returns (never exits mid-write). */
  setExitCode(code: number): void;
}

export const processIo: CliIo = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
  readStdin: async () => {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString("utf8");
  },
  setExitCode: (code) => {
    process.exitCode = code;
  },
};
