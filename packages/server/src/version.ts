/** The release version, as in the root package.json (a test holds them equal); one constant so bundles need no file at run time. */
export const VERSION = '0.1.0';
