"""The words the latency benchmarks build their text queries from (three at random, plus a number so
that no query repeats): one vocabulary, so query_latency.py and cold_query.py time the same queries."""

WORDS = [
    "dog",
    "cat",
    "beach",
    "mountain",
    "car",
    "red",
    "blue",
    "old",
    "city",
    "night",
    "snow",
    "birthday",
    "cake",
    "tree",
    "river",
    "bridge",
    "child",
]
