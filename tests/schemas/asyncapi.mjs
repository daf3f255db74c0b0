// Validates an AsyncAPI document with the AsyncAPI initiative's own parser (npm
// @asyncapi/parser): run with the document's path; exits 1 on any error-level diagnostic.
import { Parser, fromFile } from '@asyncapi/parser';

const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, process.argv[process.argv.length - 1]).parse();
for (const d of diagnostics) console.log(d.severity, d.code, d.message, JSON.stringify(d.path));
process.exit(document && !diagnostics.some((d) => d.severity === 0) ? 0 : 1);
