/**
 * `writ agent start` alone: the program bin/writ.js runs for it instead of main.ts, so the agent,
 * which runs on every node, parses and keeps only its own code and not the whole CLI's (its
 * commands, their help texts, the server's and the other tools' modules). The same options, help
 * and exit codes as `writ agent start` in main.ts: both build it from agent-start.ts.
 */
import { addAgentStart } from './agent-start.ts';
import { newProgram, runProgram } from './program.ts';

export async function main(argv: string[]): Promise<number> {
  const program = newProgram();
  addAgentStart(program.command('agent').description('node agents: run one, or manage the attested ones'));
  return runProgram(program, argv);
}
