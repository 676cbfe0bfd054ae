/**
 * For Writ's own packages (admission documents read YAML as access policies do), not published:
 * its types name the `yaml` library, which the published @writ/policy bundles.
 */
export { YamlReader, type YamlDocument } from './yaml-reader.ts';
