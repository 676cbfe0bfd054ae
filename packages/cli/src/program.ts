/**
 * The top of the `writ` program, shared by the whole CLI (main.ts) and by the agent's own entry
 * (agent-main.ts): the global options, the help's footer and how an error becomes an exit code.
 */
import { Command, CommanderError, Option } from 'commander';
import { isWritError } from '@writ/spiffe';
import { ApiError, DEFAULT_SERVER } from './client.ts';
import { CLIENT_VERSION } from './doctor.ts';
import { FORMATS, quietOnEpipe } from './output.ts';

/** One wording for the pinning flags wherever they appear (every server call, and `agent start`). */
export const PIN_HELP = {
  trustDomain: "the server's trust domain, to pin its identity spiffe://TD/writ/server (env WRIT_TRUST_DOMAIN; default: from --ca-file)",
  serverSpiffeId: 'the SPIFFE ID the server must present (env WRIT_SERVER_SPIFFE_ID; default spiffe://TD/writ/server)',
} as const;
const EXIT_CODES = '0 ok, 1 error, 2 usage, 3 policy violation (a denied authz check, a failing policy test, a denied admission check)';

export interface Globals {
  server?: string;
  token?: string;
  caFile?: string;
  trustDomain?: string;
  serverSpiffeId?: string;
  output: string;
}

/** `writ` with its global options and no commands yet. */
export function newProgram(): Command {
  return (
    new Command('writ')
      .description('Writ: workload identity and runtime trust for containers')
      .version(CLIENT_VERSION, '-V, --version', "print the client's version (writ version asks the server too)")
      .option(
        '--server <url>',
        `server URL (env WRIT_SERVER, default ${DEFAULT_SERVER}); writ agent start takes several (repeat it, or a comma list) and fails over between them`,
        (v: string, prev?: string) => (prev ? `${prev},${v}` : v),
      )
      .option('--token <token>', 'API token (env WRIT_TOKEN)')
      .option(
        '--ca-file <file>',
        "PEM file of the server's trust bundle, e.g. DATA_DIR/bundle.pem (env WRIT_CA_FILE); the server must present spiffe://TD/writ/server, TD from this file (or --trust-domain)",
      )
      .addOption(new Option('-o, --output <format>', 'output of read commands').choices(FORMATS).default('table'))
      .addHelpText(
        'after',
        `\nEvery command that calls the server also takes --trust-domain and --server-spiffe-id (see its --help).\nExit codes: ${EXIT_CODES}.`,
      )
      .showHelpAfterError()
      // Every subcommand's help lists --server, --token, --ca-file and -o: a newcomer reads one command's help, not the top.
      .configureHelp({ showGlobalOptions: true })
      .exitOverride()
  );
}

/** Runs `program` on `argv` (without node and the script): the exit code, every error reported on stderr. */
export async function runProgram(program: Command, argv: string[]): Promise<number> {
  quietOnEpipe();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') return 0;
      // A noun without its verb (or nothing at all): the help went to stderr, and it is a usage error.
      if (err.code === 'commander.help') return 2;
      if (err.code === 'writ.usage') process.stderr.write(`writ: ${err.message}\n`);
      // Already reported on stdout or stderr by the command.
      if (err.code === 'writ.failed') return 1;
      if (err.code === 'writ.violation') {
        process.stderr.write(`writ: ${err.message}\n`);
        return 3;
      }
      return 2;
    }
    if (isWritError(err)) {
      const code = err instanceof ApiError ? err.serverCode : err.code;
      // Messages passed up from a library may already end in `(CODE)`: the code is printed once.
      process.stderr.write(`writ: ${err.message.replace(new RegExp(` \\(${code}\\)$`), '')} [${code}]\n`);
      return 1;
    }
    process.stderr.write(`writ: unexpected error: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}
