/** `writ csi`: the CSI node plugin that mounts the agent's socket directory into pods (docs/deploy.md). */
import { CommanderError, type Command } from 'commander';
import { CLIENT_VERSION } from './doctor.ts';

export function registerCsi(program: Command): void {
  program
    .command('csi')
    .description("run the CSI node plugin (csi.writ.dev): pods mount the agent's Workload API socket directory read-only as an inline volume")
    .option('--endpoint <path>', 'the CSI socket the kubelet connects to', '/var/lib/kubelet/plugins/csi.writ.dev/csi.sock')
    .option('--workload-api-dir <dir>', "the agent's socket directory, what every volume shows", '/run/writ/agent')
    .option('--node-id <name>', 'this node (env NODE_NAME)')
    .action(async (f: { endpoint: string; workloadApiDir: string; nodeId?: string }) => {
      const nodeId = f.nodeId ?? (process.env['NODE_NAME'] || undefined);
      if (!nodeId) throw new CommanderError(2, 'writ.usage', 'give --node-id NAME or set NODE_NAME');
      const { CsiNodePlugin } = await import('@writ/agent');
      const plugin = new CsiNodePlugin({ endpoint: f.endpoint, workloadApiDir: f.workloadApiDir, nodeId, version: CLIENT_VERSION });
      await plugin.listen();
      process.stdout.write(
        `${JSON.stringify({ level: 30, time: new Date().toISOString(), svc: 'writ-csi', endpoint: f.endpoint, msg: 'writ csi serving' })}\n`,
      );
      const stop = (): void => void plugin.close().then(() => process.exit(0));
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await new Promise(() => undefined);
    });
}
