// Drives freesky's Xtream movie and series output with an independent client library
// (@iptv/xtream-api, unmodified): lists movie and show categories, movies and shows,
// reads one movie's and one show's details, builds their stream URLs and fetches them
// ("plays" = the bytes arrive). Prints one JSON object for tests/it/vod.rs to check.
// Usage: node xtream_vod.mjs BASE_URL USER PASSWORD MOVIE_NAME SHOW_NAME
import { Xtream } from '@iptv/xtream-api';
import { standardizedSerializer } from '@iptv/xtream-api/standardized';

const [base, username, password, movieName, showName] = process.argv.slice(2);
const std = new Xtream({ url: base, username, password, serializer: standardizedSerializer });

async function play(url) {
  const resp = await fetch(url);
  const bytes = Buffer.from(await resp.arrayBuffer());
  return { status: resp.status, length: bytes.length, base64: bytes.toString('base64') };
}

const out = {};
out.movieCategories = await std.getMovieCategories();
out.showCategories = await std.getShowCategories();
out.movies = await std.getMovies();
const movie = out.movies.find((m) => m.name === movieName);
out.movie = await std.getMovie({ movieId: movie.id });
out.moviePlay = await play(out.movie.url);
out.shows = await std.getShows();
const show = out.shows.find((s) => s.name === showName);
out.show = await std.getShow({ showId: show.id });
const episode = out.show.seasons[0].episodes[0];
out.episodeUrl = episode.url;
out.episodePlay = await play(episode.url);
try {
  await std.getMovie({ movieId: 999999 });
  out.unknownMovie = 'found';
} catch (e) {
  out.unknownMovie = String(e.message);
}
process.stdout.write(JSON.stringify(out));
