import type { Command } from 'commander';
import type { ApiClient } from './client.ts';
import { FORMATS } from './output.ts';

/** What a positional argument or a flag value completes to, asked of the server by `writ __complete KIND`. */
export const DYNAMIC = ['entries', 'policies', 'agents'] as const;
export type DynamicKind = (typeof DYNAMIC)[number];

/** Commands whose first argument is an entry id, a policy name or an agent SPIFFE ID. */
const ARGUMENTS: Record<string, DynamicKind> = {
  'entry show': 'entries',
  'entry update': 'entries',
  'entry delete': 'entries',
  'policy get': 'policies',
  'policy delete': 'policies',
  'agent show': 'agents',
  'agent evict': 'agents',
  'agent ban': 'agents',
};
const FLAG_VALUES: Record<string, DynamicKind> = { '--parent-id': 'agents' };
/** Flags passed on to `__complete`, so it asks the server the command line names. */
const CONNECTION_FLAGS = ['--server', '--token', '--ca-file', '--trust-domain', '--server-spiffe-id'];

/**
 * A completion script for commands, subcommands, flags, `-o` values, and (through the hidden
 * `writ __complete KIND`) entry ids, policy names and agent SPIFFE IDs. It completes `writ ...`
 * and `npx writ ...`; `writ` is the program that generated it (`node .../writ.js`), so completion
 * does not pay for npx.
 */
export function completionScript(program: Command, shell: 'bash' | 'zsh', self: readonly string[]): string {
  const cases: string[] = [];
  const valueFlags = new Set<string>();
  const walk = (cmd: Command, path: string[]): void => {
    const subs = cmd.commands.filter((c) => !(c as unknown as { _hidden?: boolean })._hidden).map((c) => c.name());
    for (const o of [...cmd.options, ...program.options]) if (o.required || o.optional) for (const f of [o.long, o.short]) if (f) valueFlags.add(f);
    const flags = [...new Set([...cmd.options, ...(cmd === program ? [] : program.options)].map((o) => o.long))].filter(Boolean);
    const arg = ARGUMENTS[path.join(' ')];
    cases.push(`    "${path.join(' ')}") words="${[...subs, ...flags].join(' ')}"${arg ? ` dyn=${arg}` : ''} ;;`);
    for (const c of cmd.commands) walk(c, [...path, c.name()]);
  };
  walk(program, []);
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const body = `# writ completion (${shell}): source <(writ completion ${shell})
_writ_self=(${self.map(q).join(' ')})
_writ() {
  # zsh (bashcompinit) indexes arrays from 1 unless told otherwise.
  [[ -n "\${ZSH_VERSION-}" ]] && setopt localoptions ksharrays shwordsplit
  local -a w
  local i x glue=0 start=1 cur prev path="" words="" dyn="" skip=0 pre
  # Words as typed: bash splits spiffe://a/b and --output=json at ':' and '='; join them again.
  for ((i = 0; i <= COMP_CWORD; i++)); do
    x="\${COMP_WORDS[i]}"
    if ((\${#w[@]} > 0)) && { [[ "$x" == ":" || "$x" == "=" ]] || ((glue)); }; then
      w[\${#w[@]}-1]+="$x"
      [[ "$x" == ":" || "$x" == "=" ]] && glue=1 || glue=0
    else
      w+=("$x")
      glue=0
    fi
  done
  # npx writ ...: the command's words start after "writ".
  if [[ "\${w[0]##*/}" == "npx" ]]; then
    [[ "\${w[1]}" == "writ" ]] || return 1
    start=2
  fi
  cur="\${w[\${#w[@]}-1]}"
  prev=""
  local -a conn=()
  for ((i = start; i < \${#w[@]} - 1; i++)); do
    x="\${w[i]}"
    if ((skip)); then skip=0; continue; fi
    case "$x" in
      --*=*) [[ " ${CONNECTION_FLAGS.join(' ')} " == *" \${x%%=*} "* ]] && conn+=("$x") ;;
      -*)
        if [[ " $_writ_value_flags " == *" $x "* ]]; then
          skip=1
          [[ " ${CONNECTION_FLAGS.join(' ')} " == *" $x "* ]] && conn+=("$x" "\${w[i+1]}")
        fi
        ;;
      *) path="\${path:+$path }$x" ;;
    esac
  done
  ((\${#w[@]} - 1 > start)) && prev="\${w[\${#w[@]}-2]}"
  case "$path" in
${cases.join('\n')}
    *) words="" ;;
  esac
  local cand="$words" value="$cur"
  if [[ "$cur" == --output=* ]]; then
    cand="${FORMATS.join(' ')}" value="\${cur#--output=}"
  elif [[ "$prev" == "-o" || "$prev" == "--output" ]]; then
    cand="${FORMATS.join(' ')}"
  elif [[ -n "$prev" && " $_writ_value_flags " == *" $prev "* ]]; then
    case "$prev" in
${Object.entries(FLAG_VALUES)
  .map(([f, k]) => `      ${f}) cand="$("\${_writ_self[@]}" __complete ${k} "\${conn[@]}" 2>/dev/null)" ;;`)
  .join('\n')}
      *) COMPREPLY=(); return ;;
    esac
  elif [[ -n "$dyn" && "$cur" != -* ]]; then
    # The command's argument: ids and names the server knows (nothing, quickly, when it cannot answer).
    cand="$("\${_writ_self[@]}" __complete "$dyn" "\${conn[@]}" 2>/dev/null)"
  fi
  # Filtered here, not with compgen: zsh's compgen (bashcompinit) does not work under ksharrays.
  COMPREPLY=()
  for x in $cand; do [[ "$x" == "$value"* ]] && COMPREPLY+=("$x"); done
  # What bash replaces is its own current word, which starts after the last ':' or '='.
  pre="\${cur:0:\${#cur}-\${#COMP_WORDS[COMP_CWORD]}}"
  [[ "$value" != "$cur" ]] && COMPREPLY=("\${COMPREPLY[@]/#/--output=}")
  if [[ -n "$pre" ]]; then
    for ((i = 0; i < \${#COMPREPLY[@]}; i++)); do COMPREPLY[i]="\${COMPREPLY[i]#"$pre"}"; done
  fi
}
_writ_value_flags="${[...valueFlags].sort().join(' ')}"
complete -F _writ writ
# For anything but "npx writ", npx keeps the shell's default (file names).
complete -o default -F _writ npx
`;
  return shell === 'zsh' ? `autoload -U +X bashcompinit && bashcompinit\n${body}` : body;
}

/** `writ __complete KIND`: one value per line, nothing (and exit 0) when the server cannot answer in 2 s. */
export async function completeFromServer(api: ApiClient, kind: string): Promise<void> {
  const t = { timeoutMs: 2000 };
  let values: string[] = [];
  try {
    if (kind === 'entries')
      values = (await api.call<{ entries: Array<{ id: string }> }>('GET', '/v1/entries?pageSize=1000', undefined, t)).entries.map((e) => e.id);
    else if (kind === 'policies')
      values = (await api.call<{ policies: Array<{ name: string }> }>('GET', '/v1/policies', undefined, t)).policies.map((p) => p.name);
    else if (kind === 'agents')
      values = (await api.call<{ agents: Array<{ spiffeId: string }> }>('GET', '/v1/agents', undefined, t)).agents.map((a) => a.spiffeId);
  } catch {
    // Completion must stay quiet: a shell prompt is no place for an error.
  }
  if (values.length) process.stdout.write(`${values.join('\n')}\n`);
}
