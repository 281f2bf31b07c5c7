// Parses an M3U playlist from stdin with a third-party parser (iptv-playlist-parser)
// and prints its result as JSON, for tests/xtream_out.rs.
import parser from 'iptv-playlist-parser';

let text = '';
for await (const chunk of process.stdin) text += chunk;
process.stdout.write(JSON.stringify(parser.parse(text)));
