import type { CommandRecord, CommandRequest } from '../model/commands.ts';
import { killAllGroups, spawnLocal } from './spawn-local.ts';

// The spawner process: the harness sends it every command over IPC and it starts them. Forking
// copies the parent's page tables, so a spawn from the harness (hundreds of MiB of heap and
// images) costs several ms of its main thread; from this small process it costs a fraction, on
// another core. Its children die with it: when the harness goes away (the IPC channel closes),
// by a signal or a crash, it kills every process group it started and exits.

export type SpawnerMessage = { type: 'run'; id: number; request: CommandRequest } | { type: 'kill'; id: number };
export type SpawnerReply = { id: number; record: CommandRecord } | { id: number; error: string };

const kills = new Map<number, () => void>();

process.on('message', (m: SpawnerMessage) => {
  if (m.type === 'kill') {
    kills.get(m.id)?.();
    return;
  }
  spawnLocal(m.request, (kill) => kills.set(m.id, kill)).then(
    (record) => reply({ id: m.id, record }),
    (err: unknown) => reply({ id: m.id, error: String((err as Error)?.message ?? err) }),
  );
});

function reply(r: SpawnerReply) {
  kills.delete(r.id);
  if (process.connected) process.send!(r);
}

const quit = () => {
  killAllGroups();
  process.exit(0);
};
process.on('disconnect', quit);
process.on('SIGTERM', quit);
