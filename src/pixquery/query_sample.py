"""A fixed sample of everyday text queries, for measuring an index the way it will be used.

`auto` (indexes/auto.py) raises each candidate's search knob until recall@k against exact search
reaches its target on calibration queries. Text queries sit elsewhere in CLIP space than image
vectors (the modality gap) and each index kind reacts to that differently, so the library hands
`auto` its own text tower's embeddings of these sentences instead of random directions.

What people type into a photo search: things, animals, places, scenes, events, a few with
attributes. Plain words and short phrases, as typed, not "a photo of ..." prompts.
"""

from __future__ import annotations

SUBJECTS = [
    "dog", "cat", "horse", "bird", "fish", "cow", "sheep", "butterfly", "spider", "snake",
    "elephant", "lion", "bear", "monkey", "duck", "owl", "frog", "turtle", "rabbit", "squirrel",
    "car", "bicycle", "motorcycle", "bus", "train", "airplane", "boat", "truck", "tractor", "helicopter",
    "beach", "mountain", "forest", "desert", "lake", "river", "waterfall", "snow", "city street", "bridge",
    "church", "castle", "skyscraper", "farm", "garden", "park", "harbour", "market", "stadium", "kitchen",
    "pizza", "cake", "coffee", "soup", "fruit", "bread", "ice cream", "wine", "salad", "sushi",
    "guitar", "piano", "clock", "phone", "laptop", "keyboard", "book", "chair", "lamp", "umbrella",
    "flower", "tree", "sunset", "rainbow", "storm", "fireworks", "moon", "stars", "fog", "autumn leaves",
    "wedding", "birthday party", "concert", "football match", "child playing", "family dinner", "graduation",
    "christmas tree", "camping tent", "swimming pool",
    "old man", "woman smiling", "baby", "group of friends", "person running", "selfie", "portrait",
    "crowd", "dancer", "chef cooking",
]

SENTENCES = [
    "a dog playing in the snow", "a cat sleeping on a sofa", "a red sports car", "a bird on a branch",
    "a sunset over the sea", "a bowl of soup on a table", "a snowy mountain peak", "someone playing the guitar",
    "a ship in a harbour", "a close-up of a yellow flower", "children on a beach", "an old stone building",
    "a plane in a blue sky", "a plate of pasta", "a horse in a green field", "a bicycle leaning on a wall",
    "a clock tower", "a spider web with dew", "people at a street market", "a lighthouse on a cliff",
    "a birthday cake with candles", "a foggy forest path", "a city at night", "fireworks over a river",
    "a kitten in a basket", "a man fishing from a boat", "a bride and groom", "a mountain lake with reflections",
    "a tractor in a field", "a cup of coffee and a book", "a dog catching a ball", "a train at a station",
    "a snowman", "a hot air balloon", "a beach with palm trees", "a waterfall in the jungle",
    "a person skiing", "a surfer on a wave", "a bowl of fruit", "an empty road through the desert",
    "a girl with an umbrella in the rain", "a farmer with cows", "a bridge over a river at dusk",
    "a crowded stadium", "a bookshelf full of books", "a campfire at night", "a garden full of roses",
    "a cathedral interior", "two friends laughing", "a baby sleeping",
    "a fox in the woods", "an owl at night", "a deer in the forest", "a butterfly on a flower",
    "a sailing boat at sea", "a motorbike on a mountain road", "a food truck", "a pizza in a wood oven",
    "a rainy window", "a frozen lake", "a desk with a laptop", "a grandmother knitting",
    "a street musician", "a market stall with vegetables", "a dog on a leash", "a cat looking out of a window",
    "a tent in the mountains", "a rowing boat on a lake", "autumn trees in a park", "a city skyline at sunset",
    "a red door", "a blue car parked on a street", "a black and white photo of a street", "a child on a swing",
    "a plate of sushi", "a glass of red wine", "a picnic in a park", "a swimming pool at a hotel",
    "a snowy village", "a harbour with fishing boats", "an elephant in the savanna", "a lion resting",
    "a monkey in a tree", "a turtle on a beach", "a goldfish in a bowl", "a horse and rider",
    "a cyclist in a race", "a marathon runner", "a football player kicking a ball", "a tennis court",
    "a concert crowd with lights", "a chef in a kitchen", "a bakery window", "a bowl of ramen",
    "a wedding cake", "a christmas market", "a family on a sofa", "a graduation ceremony",
    "a mountain hut", "a vineyard",
]

QUERIES = SUBJECTS + SENTENCES
