"""MovieLens readers: ML-100K (u.data, u.item, u.user) and the ml-latest family (ratings.csv, movies.csv;
ml-latest-small, ml-25m and ml-32m share it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recfound.data.logs.delimited import Column, FileLayout, read_delimited
from recfound.data.logs.source import Events, Source, clean_text, item_table
from recfound.data.logs.textio import Notes

# u.genre's order of the 19 flags in u.item; "unknown" marks a movie without genres
GENRES_100K = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
               "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
               "War", "Western")
NO_GENRES = "(no genres listed)"
MAX_SECONDS = 2 ** 40
RATING = Column("rating", "float", 0.5, 5)

U_DATA = FileLayout("ML-100K u.data (user, item, rating, timestamp)", "\t", (
    Column("user", "int"), Column("item", "int"), RATING, Column("timestamp", "int", 0, MAX_SECONDS)))
U_ITEM = FileLayout(
    "ML-100K u.item (id|title|release date|video release date|IMDb URL|19 genre flags)", "|",
    (Column("item", "int"), Column("title"), Column("release"), Column("video_release"), Column("url"),
     *(Column(f"genre_{i}", "int", 0, 1) for i in range(len(GENRES_100K)))),
    encoding="latin-1",
    encoding_hint="ML-100K's u.item is latin-1: leave out --encoding to read it as latin-1")
U_USER = FileLayout("ML-100K u.user (id|age|gender|occupation|zip)", "|", (
    Column("user", "int"), Column("age", "int", 0, 150), Column("gender"), Column("occupation"), Column("zip")),
    encoding="latin-1")
RATINGS = FileLayout("ml-latest ratings.csv (userId,movieId,rating,timestamp)", ",", (
    Column("userId", "int"), Column("movieId", "int"), RATING, Column("timestamp", "int", 0, MAX_SECONDS)),
    header=True, encoding_hint="MovieLens CSV files are UTF-8; name the file's encoding with --encoding")
MOVIES = FileLayout("ml-latest movies.csv (movieId,title,genres)", ",", (
    Column("movieId", "int"), Column("title"), Column("genres")), header=True, quoted=True,
    encoding_hint=RATINGS.encoding_hint)


def read_movielens(folder: Path, notes: Notes, encoding: str | None = None) -> Source:
    """The MovieLens folder's events and movies (its layout told apart by its file names)."""
    folder = Path(folder)
    if (folder / "u.data").is_file():
        return _ml_100k(folder, notes, encoding)
    if (folder / "ratings.csv").is_file():
        return _ml_latest(folder, notes, encoding)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (give the MovieLens folder, e.g. ml-100k/)")
    raise FileNotFoundError(f"{folder}: neither u.data (ML-100K) nor ratings.csv (ml-latest, ml-25m, ml-32m) found")


def _required(folder: Path, name: str, layout: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {layout} needs it beside the ratings")
    return path


def _events(user: pa.ChunkedArray, item: pa.ChunkedArray, seconds: pa.ChunkedArray,
            rating: pa.ChunkedArray) -> Events:
    return Events(user=user, item=item, time=seconds.to_numpy() * 1000, rating=rating.to_numpy().astype(np.float64))


def _year_from_title(titles: pa.Array) -> pa.Array:
    pattern = r"\((?P<year>\d{4})\)\s*$"
    found = pc.fill_null(pc.match_substring_regex(titles, pattern), False)
    years = pc.struct_field(pc.extract_regex(pc.if_else(found, titles, "(0000)"), pattern), "year")
    return pc.if_else(found, pc.cast(years, pa.int32()), pa.scalar(None, pa.int32()))


def _ml_100k(folder: Path, notes: Notes, encoding: str | None) -> Source:
    ratings = read_delimited(folder / "u.data", U_DATA, notes)
    item_path = _required(folder, "u.item", "ML-100K")
    movies = read_delimited(item_path, U_ITEM, notes, encoding)
    if encoding is None:
        notes.note("u.item read as latin-1 (the encoding ML-100K ships it in)")
    flags = np.stack([movies[f"genre_{i}"].to_numpy() for i in range(1, len(GENRES_100K))], axis=1)
    genres = [[GENRES_100K[j + 1] for j in np.flatnonzero(row)] for row in flags]
    release = movies["release"].combine_chunks()
    from_release = pc.fill_null(pc.match_substring_regex(release, r"\d{4}$"), False)
    year = pc.if_else(from_release, pc.cast(pc.utf8_slice_codeunits(pc.if_else(from_release, release, "0000"), -4),
                                            pa.int32()), _year_from_title(movies["title"].combine_chunks()))
    items = item_table({"id": pc.cast(movies["item"], pa.string()).combine_chunks(),
                        "title": clean_text(movies["title"]).combine_chunks(), "categories": genres, "year": year})
    users = None
    if (folder / "u.user").is_file():
        table = read_delimited(folder / "u.user", U_USER, notes)
        users = pa.table({"id": pc.cast(table["user"], pa.string()), "age": table["age"]})
    events = _events(ratings["user"], ratings["item"], ratings["timestamp"], ratings["rating"])
    return Source("movielens", "ml-100k", events, items, users=users, genres=True)


def _ml_latest(folder: Path, notes: Notes, encoding: str | None) -> Source:
    ratings = read_delimited(folder / "ratings.csv", RATINGS, notes, encoding)
    movies = read_delimited(_required(folder, "movies.csv", "ml-latest"), MOVIES, notes, encoding)
    genres = movies["genres"].combine_chunks()
    listed = pc.and_(pc.not_equal(genres, NO_GENRES), pc.greater(pc.utf8_length(genres), 0))
    titles = clean_text(movies["title"]).combine_chunks()
    items = item_table({"id": pc.cast(movies["movieId"], pa.string()).combine_chunks(), "title": titles,
                        "categories": pc.if_else(listed, pc.split_pattern(genres, "|"),
                                                 pa.scalar([], pa.list_(pa.string()))),
                        "year": _year_from_title(titles)})
    events = _events(ratings["userId"], ratings["movieId"], ratings["timestamp"], ratings["rating"])
    return Source("movielens", "ml-latest", events, items, genres=True)
