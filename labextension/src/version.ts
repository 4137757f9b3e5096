/** The labextension's own version, from its package.json at build time. */
// eslint-disable-next-line @typescript-eslint/no-var-requires
declare const require: (path: string) => { version: string };
export const VERSION: string = require('../package.json').version;
