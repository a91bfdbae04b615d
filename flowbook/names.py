"""Readable random run names such as ``"phenomenal-spider"``.

Design: one adjective and one animal drawn with the ``random`` module, which is fast and
needs no entropy source; the names are labels for people, not identifiers, so collisions
are harmless (runs are told apart by their ids). Words are lowercase ASCII without hyphens,
so every name matches ``^[a-z]+-[a-z]+$``.

Names people give (``name=``, run-name templates) are checked by ``name_problem``: a name is
shown on one line of a log, a table or the side panel and looked up by the command line, so
an empty one or one with control characters (a newline, a NUL) would be unreadable there.
"""

from __future__ import annotations

import random
import unicodedata

__all__ = ["ADJECTIVES", "ANIMALS", "generate_run_name", "name_problem"]

ADJECTIVES: tuple[str, ...] = (
    "able", "agile", "amber", "ample", "ancient", "arcane", "ardent", "astute", "azure",
    "balmy", "bashful", "benevolent", "bizarre", "blithe", "bold", "bouncy", "brainy",
    "brave", "breezy", "bright", "brilliant", "brisk", "bronze", "bubbly", "busy", "calm",
    "candid", "capable", "careful", "cheerful", "chipper", "classic", "clever", "cloudy",
    "cobalt", "colorful", "cosmic", "courageous", "cozy", "crafty", "crimson", "crisp",
    "curious", "dapper", "daring", "dashing", "dazzling", "debonair", "deft", "delightful",
    "devoted", "diligent", "discreet", "dynamic", "eager", "earnest", "elegant", "emerald",
    "enchanted", "energetic", "epic", "excellent", "exuberant", "fabulous", "fancy",
    "fearless", "festive", "fiery", "flawless", "fluffy", "flying", "fortunate", "fragrant",
    "friendly", "frosty", "gallant", "gentle", "gifted", "glittering", "glorious", "golden",
    "graceful", "grand", "groovy", "happy", "hardy", "harmonious", "hearty", "helpful",
    "heroic", "honest", "hopeful", "humble", "icy", "illustrious", "imaginary", "impartial",
    "industrious", "ingenious", "inquisitive", "jolly", "jovial", "joyful", "jubilant",
    "keen", "kind", "lavender", "lively", "logical", "loyal", "lucky", "luminous", "lush",
    "magenta", "magnetic", "majestic", "mellow", "merry", "mighty", "mindful", "modest",
    "mysterious", "nebulous", "nimble", "noble", "nostalgic", "observant", "optimistic",
    "outstanding", "patient", "peaceful", "perky", "phenomenal", "placid", "playful",
    "polite", "precious", "proud", "quick", "quiet", "quirky", "radiant", "rapid",
    "rational", "resilient", "robust", "rosy", "rugged", "rustic", "sage", "sapphire",
    "scarlet", "serene", "shiny", "silent", "silky", "silver", "sincere", "smart", "snowy",
    "solar", "sparkling", "speedy", "spicy", "splendid", "spry", "stalwart", "steady",
    "stellar", "sturdy", "sunny", "swift", "tactful", "teal", "tenacious", "thankful",
    "thoughtful", "tidy", "tireless", "tranquil", "tropical", "trusty", "turquoise",
    "unique", "upbeat", "valiant", "velvet", "venerable", "vibrant", "vigilant", "violet",
    "vivid", "warm", "whimsical", "wise", "witty", "wondrous", "zany", "zealous", "zesty",
)  # fmt: skip

ANIMALS: tuple[str, ...] = (
    "aardvark", "albatross", "alligator", "alpaca", "anaconda", "anteater", "antelope",
    "armadillo", "axolotl", "baboon", "badger", "barracuda", "bat", "beagle", "bear",
    "beaver", "bee", "beetle", "bison", "bobcat", "bonobo", "buffalo", "bullfrog",
    "butterfly", "camel", "capybara", "cardinal", "caribou", "cassowary", "cat",
    "caterpillar", "chameleon", "cheetah", "chickadee", "chimpanzee", "chinchilla",
    "chipmunk", "cicada", "clam", "cobra", "cockatoo", "condor", "cormorant", "cougar",
    "coyote", "crab", "crane", "cricket", "crocodile", "crow", "cuckoo", "curlew", "dingo",
    "dolphin", "donkey", "dormouse", "dove", "dragonfly", "duck", "dugong", "eagle", "eel",
    "egret", "eland", "elephant", "elk", "emu", "falcon", "ferret", "finch", "firefly",
    "flamingo", "fox", "frog", "gazelle", "gecko", "gerbil", "gibbon", "giraffe", "gnu",
    "goat", "goldfinch", "goose", "gopher", "gorilla", "grasshopper", "grouse", "gull",
    "hamster", "hare", "harrier", "hawk", "hedgehog", "heron", "hippo", "hornet", "horse",
    "hummingbird", "hyena", "ibex", "ibis", "iguana", "impala", "jackal", "jackdaw",
    "jaguar", "jay", "jellyfish", "kangaroo", "kestrel", "kingfisher", "kiwi", "koala",
    "kookaburra", "ladybug", "lemming", "lemur", "leopard", "lion", "lizard", "llama",
    "lobster", "lynx", "macaw", "magpie", "mallard", "manatee", "mandrill", "mantis",
    "marmot", "meerkat", "mink", "mole", "mongoose", "monkey", "moose", "moth", "mouse",
    "narwhal", "newt", "nightingale", "ocelot", "octopus", "okapi", "opossum", "orca",
    "oriole", "oryx", "osprey", "ostrich", "otter", "owl", "ox", "oyster", "panda",
    "panther", "parrot", "partridge", "peacock", "pelican", "penguin", "pheasant", "pigeon",
    "platypus", "pony", "porcupine", "porpoise", "puffin", "puma", "quail", "quokka",
    "rabbit", "raccoon", "raven", "reindeer", "rhino", "robin", "salamander", "salmon",
    "sandpiper", "seahorse", "seal", "shark", "sheep", "shrew", "shrimp", "sloth", "snail",
    "sparrow", "spider", "squid", "squirrel", "starling", "stingray", "stork", "swallow",
    "swan", "tapir", "tarsier", "tiger", "toad", "tortoise", "toucan", "trout", "tuna",
    "turtle", "wallaby", "walrus", "warthog", "whale", "wildcat", "wolf", "wolverine",
    "wombat", "woodpecker", "wren", "yak", "zebra",
)  # fmt: skip


def generate_run_name() -> str:
    """A random ``"adjective-animal"`` name, e.g. ``"phenomenal-spider"``."""
    return f"{random.choice(ADJECTIVES)}-{random.choice(ANIMALS)}"


# Cc: C0/C1 controls (newline, tab, NUL, escape); Zl/Zp: line and paragraph separators
_UNPRINTABLE = ("Cc", "Zl", "Zp")


def name_problem(value: str) -> str | None:
    """Why ``value`` cannot be a flow, task or run name, as "is empty" (None when it can)."""
    if value.isprintable() and not value.isspace() and value:
        return None  # the common case, at C speed: no control character, not blank
    if not value.strip():
        return "is empty" if not value else "is only whitespace"
    for position, char in enumerate(value):
        if unicodedata.category(char) in _UNPRINTABLE:
            return f"contains the control character {char!r} at position {position}"
    return None
