// Drives freesky's Xtream output with an independent client library
// (@iptv/xtream-api, unmodified): logs in, lists categories and channels, reads a short
// EPG and builds stream URLs. Prints one JSON object for tests/xtream_out.rs to check.
// Usage: node xtream_client.mjs BASE_URL USER PASSWORD [preferredFormat]
import { Xtream } from '@iptv/xtream-api';
import { standardizedSerializer } from '@iptv/xtream-api/standardized';

const [base, username, password, format] = process.argv.slice(2);
const raw = new Xtream({ url: base, username, password, preferredFormat: format || 'ts' });
const std = new Xtream({
  url: base, username, password, preferredFormat: format || 'ts',
  serializer: standardizedSerializer,
});

const out = {};
out.profile = await std.getProfile();
out.serverInfo = await std.getServerInfo();
out.categories = await std.getChannelCategories();
out.channels = await std.getChannels();
out.rawChannels = await raw.getChannels();
const first = out.channels[0];
out.byCategory = await std.getChannels({ categoryId: out.categories[0].id });
out.shortEpg = await std.getShortEPG({ channelId: first.id, limit: 2 });
out.fullEpg = await std.getFullEPG({ channelId: first.id });
out.movieCategories = await std.getMovieCategories();
out.showCategories = await std.getShowCategories();
out.streamUrlTs = raw.generateStreamUrl({ type: 'channel', streamId: first.id, extension: 'ts' });
out.streamUrlM3u8 = raw.generateStreamUrl({ type: 'channel', streamId: first.id, extension: 'm3u8' });
process.stdout.write(JSON.stringify(out));
