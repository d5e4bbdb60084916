"""The fixed word lists of the synthetic corpus: taxonomy, attributes, brands, sentiment and dialogue words.

The vocabulary is kept small on purpose (tiny models use a tokenizer built from the corpus), and the
lists are disjoint where a task relies on it: attribute values never reuse title adjectives or
sentiment words, so a value found in a text was put there as that attribute.
"""

from __future__ import annotations

# top category -> sub category -> leaf category -> product nouns
TAXONOMY: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "Sports": {
        "Tennis": {"Rackets": ("tennis racket", "squash racket"), "Court Accessories": ("headband", "grip tape")},
        "Running": {"Running Shoes": ("running shoe", "trail shoe"), "Running Gear": ("armband", "running belt")},
        "Camping": {"Shelter": ("tent", "tarp"), "Camp Kitchen": ("camp stove", "mess kit")},
    },
    "Electronics": {
        "Audio": {"Headphones": ("headset", "earphone"), "Speakers": ("speaker", "soundbar")},
        "Computers": {"Input Devices": ("keyboard", "mouse"), "Storage": ("flash drive", "external drive")},
        "Camera": {"Tripods": ("tripod", "monopod"), "Camera Bags": ("camera bag", "lens case")},
    },
    "Home": {
        "Cookware": {"Pans": ("frying pan", "saucepan"), "Bakeware": ("baking pan", "muffin tray")},
        "Bedding": {"Blankets": ("blanket", "throw"), "Pillows": ("pillow", "cushion")},
        "Decor": {"Candles": ("candle", "candle holder"), "Vases": ("vase", "planter")},
    },
    "Clothing": {
        "Tops": {"Shirts": ("t-shirt", "polo shirt"), "Sweaters": ("sweater", "cardigan")},
        "Outerwear": {"Jackets": ("rain jacket", "fleece jacket"), "Vests": ("puffer vest", "hiking vest")},
        "Footwear": {"Boots": ("hiking boot", "ankle boot"), "Sandals": ("sandal", "slide")},
    },
    "Beauty": {
        "Skin Care": {"Moisturizers": ("face cream", "body lotion"), "Cleansers": ("face wash", "cleansing oil")},
        "Hair Care": {"Shampoo": ("shampoo", "conditioner"), "Styling": ("hair gel", "hair spray")},
        "Makeup": {"Lips": ("lipstick", "lip balm"), "Eyes": ("mascara", "eyeliner")},
    },
    "Toys": {
        "Puzzles": {"Jigsaws": ("jigsaw puzzle", "floor puzzle"), "Brain Teasers": ("puzzle cube", "maze game")},
        "Building": {"Blocks": ("block set", "brick set"), "Kits": ("robot kit", "model kit")},
        "Outdoor Play": {"Balls": ("kick ball", "bouncy ball"), "Water Toys": ("water gun", "pool float")},
    },
    "Pets": {
        "Dogs": {"Dog Beds": ("dog bed", "dog crate"), "Dog Toys": ("chew toy", "tug toy")},
        "Cats": {"Scratchers": ("scratching post", "cat tree"), "Litter": ("litter box", "litter mat")},
        "Aquarium": {"Tanks": ("fish tank", "nano tank"), "Filters": ("water filter", "air pump")},
    },
    "Office": {
        "Writing": {"Pens": ("gel pen", "ballpoint pen"), "Pencils": ("pencil", "mechanical pencil")},
        "Stationery": {"Notebooks": ("notebook", "journal"), "Sticky Notes": ("sticky pad", "card pack")},
        "Desk": {"Organizers": ("desk organizer", "file tray"), "Lamps": ("desk lamp", "clip lamp")},
    },
}

COLORS = ("black", "white", "red", "blue", "green", "gray", "pink", "orange", "purple", "yellow", "navy", "beige")

# top category -> attribute -> values; every item of the top has each of these attributes
ATTRIBUTES: dict[str, dict[str, tuple[str, ...]]] = {
    "Sports": {"color": COLORS, "material": ("nylon", "polyester", "graphite", "rubber", "aluminum"),
               "size": ("small", "medium", "large"), "level": ("beginner", "intermediate", "expert")},
    "Electronics": {"color": COLORS, "material": ("plastic", "aluminum", "silicone", "carbon fiber"),
                    "connectivity": ("wireless", "wired", "bluetooth"),
                    "battery life": ("8 hours", "12 hours", "24 hours")},
    "Home": {"color": COLORS, "material": ("cotton", "ceramic", "stainless steel", "glass", "wool"),
             "size": ("small", "medium", "large"), "care": ("dishwasher safe", "hand wash only", "machine washable")},
    "Clothing": {"color": COLORS, "material": ("cotton", "wool", "polyester", "linen", "denim"),
                 "size": ("small", "medium", "large", "x-large"), "fit": ("slim fit", "regular fit", "relaxed fit")},
    "Beauty": {"scent": ("unscented", "lavender", "citrus", "vanilla", "rose"), "volume": ("50 ml", "100 ml", "200 ml"),
               "skin type": ("dry skin", "oily skin", "sensitive skin"), "finish": ("matte", "glossy", "dewy")},
    "Toys": {"color": COLORS, "material": ("wood", "plastic", "foam", "cardboard"),
             "age range": ("3 to 5 years", "6 to 8 years", "9 to 12 years"),
             "piece count": ("50 pieces", "100 pieces", "500 pieces")},
    "Pets": {"color": COLORS, "material": ("plush", "plastic", "rope", "wood", "glass"),
             "size": ("small", "medium", "large"), "life stage": ("young", "adult", "senior")},
    "Office": {"color": COLORS, "material": ("paper", "plastic", "metal", "bamboo"),
               "size": ("A5", "A4", "letter"), "pack size": ("2 pack", "6 pack", "12 pack")},
}

BRANDS = (
    "Alder", "Brisk", "Corva", "Dunmore", "Elwin", "Fenno", "Galta", "Harlo", "Istra", "Jovan",
    "Kestra", "Lumio", "Marlo", "Norvik", "Orla", "Pello", "Quill", "Rovan", "Solva", "Tarrin",
    "Ulmo", "Vexa", "Wendt", "Yarra", "Zelto", "Arvo", "Bexley", "Calder", "Dorsa", "Evra",
    "Foxley", "Grell", "Halden", "Ivo", "Jasper", "Kova", "Lindel", "Mirra", "Nolan", "Ostra",
)

# title adjective -> price factor (budget, standard and premium lines)
ADJECTIVES: dict[str, float] = {
    "Basic": 0.7, "Everyday": 0.7, "Value": 0.7, "Essential": 0.8,
    "Classic": 1.0, "Original": 1.0, "Modern": 1.0, "Urban": 1.0, "Nordic": 1.1, "Studio": 1.1,
    "Pro": 1.5, "Elite": 1.6, "Deluxe": 1.6, "Signature": 1.7, "Heritage": 1.8,
}

GENERIC_FEATURES = (
    "easy to clean", "one year warranty", "gift box included", "ships in recyclable packaging",
    "tested for daily use", "backed by our support team",
)

USE_SENTENCES = (
    "A sensible choice for {sub} fans.",
    "Designed for everyday {sub} needs.",
    "Part of the {brand} {sub} line.",
)

# the five sentiment labels, strongest positive first, each with its own words
SENTIMENT_LABELS = ("very positive", "positive", "neutral", "negative", "very negative")
SENTIMENT_WORDS: dict[str, tuple[str, ...]] = {
    "very positive": ("amazing", "superb", "outstanding", "fantastic", "flawless", "wonderful"),
    "positive": ("good", "nice", "solid", "pleasant", "handy", "reliable"),
    "neutral": ("okay", "average", "acceptable", "ordinary", "fair", "passable"),
    "negative": ("poor", "flimsy", "weak", "mediocre", "disappointing", "underwhelming"),
    "very negative": ("terrible", "awful", "horrible", "useless", "dreadful", "worthless"),
}
SENTIMENT_TEMPLATES = (
    "The {aspect} is {word}.",
    "I found the {aspect} {word}.",
    "Overall it feels {word}.",
    "Honestly {word} for the price.",
    "My first impression was {word}.",
)
ASPECTS = ("quality", "design", "look", "packaging", "value", "build")
NEUTRAL_FILLERS = (
    "I bought it last month.",
    "It arrived on time.",
    "I use it most weekends.",
    "This was a gift for my sister.",
    "I compared a few before ordering.",
    "The box had everything listed.",
)

FEMALE_NAMES = ("Ana", "Beth", "Clara", "Dana", "Ella", "Fiona", "Grace", "Hana", "Iris", "Julia", "Kate", "Lena")
MALE_NAMES = ("Adam", "Ben", "Carl", "David", "Eric", "Frank", "Gary", "Hugo", "Ian", "Jack", "Leo", "Mark")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TIMES = ("9 am", "10 am", "noon", "2 pm", "4 pm", "6 pm", "8 pm")
CITIES = ("Springfield", "Riverton", "Lakeside", "Fairview", "Hillcrest", "Oakdale", "Maplewood", "Bayport")
