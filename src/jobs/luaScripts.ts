/** The job layer's Redis scripts, one file each in ./scripts (their comments say what they do), read once. */
import { readFileSync } from 'node:fs';
import { RedisScript } from '../redis';

export type ScriptName = 'add' | 'take' | 'guard' | 'raise' | 'save' | 'count' | 'stats';

const scripts = new Map<ScriptName, string>();

export function luaScript(name: ScriptName): string {
  let lua = scripts.get(name);
  if (lua === undefined) {
    lua = readFileSync(new URL(`./scripts/${name}.lua`, import.meta.url), 'utf8');
    scripts.set(name, lua);
  }
  return lua;
}

/** The script `name`, ready to run (see RedisScript for numberOfKeys). */
export const jobScript = <T>(name: ScriptName, numberOfKeys?: number) => new RedisScript<T>(luaScript(name), numberOfKeys);
