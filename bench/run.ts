/** `npm run bench -- <name>`: runs one benchmark (or all with no name). */
const BENCHES = {
  ca: './ca.ts',
  store: './store.ts',
  agent: './agent.ts',
  policy: './policy.ts',
  propagation: './propagation.ts',
  proxy: './proxy.ts',
  admission: './admission.ts',
  broker: './broker.ts',
  vuln: './vuln.ts',
  spire: './spire.ts',
  backup: './backup.ts',
  dashboard: './dashboard.ts',
  audit: './audit.ts',
  transparency: './transparency.ts',
  soak: './soak.ts',
  failover: './failover.ts',
} as const;
const name = process.argv[2];
if (name && !(name in BENCHES)) {
  console.error(`unknown benchmark "${name}"; choose one of: ${Object.keys(BENCHES).join(', ')}`);
  process.exit(2);
}
for (const [n, file] of Object.entries(BENCHES)) {
  if (name && n !== name) continue;
  const mod = (await import(file)) as { run(): Promise<void> };
  await mod.run();
}
