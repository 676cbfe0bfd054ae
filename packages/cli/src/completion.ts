import type { Command } from 'commander';

/** A completion script for commands, subcommands and their flags, generated from the command tree. */
export function completionScript(program: Command, shell: 'bash' | 'zsh'): string {
  const cases: string[] = [];
  const walk = (cmd: Command, path: string[]): void => {
    const subs = cmd.commands.map((c) => c.name());
    const flags = [...cmd.options, ...(path.length ? [] : [])].map((o) => o.long).filter(Boolean);
    const globals = program.options.map((o) => o.long).filter(Boolean);
    cases.push(`    "${path.join(' ')}") words="${[...subs, ...flags, ...globals].join(' ')}" ;;`);
    for (const c of cmd.commands) walk(c, [...path, c.name()]);
  };
  walk(program, []);
  const body = `_writ() {
  local cur words path i
  cur="\${COMP_WORDS[COMP_CWORD]}"
  path=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in -*) ;; *) path="\${path:+$path }\${COMP_WORDS[i]}" ;; esac
  done
  case "$path" in
${cases.join('\n')}
    *) words="" ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _writ writ
`;
  return shell === 'zsh' ? `autoload -U +X bashcompinit && bashcompinit\n${body}` : body;
}
