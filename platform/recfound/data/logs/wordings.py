"""Instruction wordings of the records built from logs (ours), per task; each record draws one."""

from __future__ import annotations

WORDINGS: dict[str, tuple[str, ...]] = {
    "U2I": (
        "Encode this user's recent items, newest first, so that the item they pick next lies close by.",
        "Represent the interaction history below (latest first) as a vector that retrieves the user's next item.",
        "Embed what this person engaged with lately, most recent first, to look up what they choose next.",
    ),
    "I2I": (
        "Encode this item so that items people engage with alongside it lie close by.",
        "Represent the item below for finding items that the same users tend to pick as well.",
        "Embed this item to retrieve its companions: items chosen by the same people.",
    ),
    "Q2I": (
        "Encode this request so that the items that satisfy it are its nearest neighbours.",
        "Represent what the user is looking for, to retrieve matching items.",
        "Embed this search to find the item it describes.",
    ),
    "SR": (
        "Here is what this user interacted with, newest first. Which option will they pick next? "
        "Reply with its letter.",
        "Given the history below (latest first), choose the candidate the user is most likely to engage with "
        "next. Answer with the option letter.",
        "Continue this user's sequence: pick the option that best follows their recent items and give its letter.",
    ),
    "SA": (
        "How does this reviewer rate the product? Choose the matching option and reply with its letter.",
        "Read the review and pick the rating it expresses; reply with the option letter.",
        "Classify the opinion in this review with the options below.",
    ),
    "UP": (
        "Read the ratings below (newest first) and describe this user's tastes: what they like, what they rate "
        "low and their favourite.",
        "Write a short profile of the user from their rated history.",
        "Summarise the preferences these ratings reveal.",
    ),
    "IP": (
        "Describe the item below: what kind of item it is and how it was received.",
        "Write a short profile of this item from what is known about it.",
        "Introduce this item to someone who has not come across it.",
    ),
    "PRP": (
        "How are item 1 and item 2 related? Choose the option that fits and reply with its letter.",
        "Judge the relation between these two items and answer with an option letter.",
        "Pick the option that best describes how these two items relate.",
    ),
    "AVE": (
        "Find the value of each target attribute in the listing. Reply with a JSON list of objects with keys "
        "attribute, value and source (the listing field the value appears in).",
        "Extract the requested attributes from the listing as a JSON list of {\"attribute\", \"value\", "
        "\"source\"} objects, one per field where the value occurs.",
        "For each target attribute, report its value and the field (title, features, description) that states "
        "it, as a JSON list of attribute/value/source objects.",
    ),
    "MIM": (
        "One item of this user's history (oldest first) is hidden as [masked]. Which option is it? "
        "Reply with the letter.",
        "Fill the gap: the history below, in time order, has one item replaced by [masked]. Pick the option "
        "that belongs there and give its letter.",
        "Recover the masked entry of this chronological history from the options; answer with the option letter.",
    ),
    "PREF": (
        "Given this user's recent items (newest first), which of the two options did they choose next? "
        "Reply with A or B.",
        "One option is the item this user chose next, the other one they never touched. Answer with the "
        "letter of the one they chose.",
        "Weigh the two candidates against the history and give the letter of the one this user engaged with.",
    ),
    "WI": (
        "Based on the history (newest first), will this user interact with the candidate item next? "
        "Reply yes or no.",
        "Is the candidate the next item this user chose? Answer yes or no.",
        "Decide from the recent items whether the user goes on to the candidate. Output yes or no.",
    ),
    "RP": (
        "From the user's ratings (newest first), predict the rating from 1 to 5 they give the item to rate. "
        "Reply with the number only.",
        "Predict this user's rating (1-5) of the new item from their rating history.",
        "How many stars, 1 to 5, will the user give the item below? Answer with one number.",
    ),
    "UAP": (
        "Guess the age group of this user from what they rated. Reply with one of: under 18, 18-24, 25-34, "
        "35-44, 45-49, 50-55, 56 or older.",
        "Which age band does the user belong to, judging by their ratings? Answer with the band.",
        "From the rated history, predict the user's age group (under 18, 18-24, 25-34, 35-44, 45-49, 50-55 "
        "or 56 or older).",
    ),
}
