"""The game of "Who is the Spy?" on pictures: rules, prompts, parsing and rewards, in plain Python (no torch)."""

from vzero.game.config import GameConfig
from vzero.game.game import OBSERVER, Game, Responder, Stage, Transcript, Turn, last_clues, play_game, play_games
from vzero.game.parse import parse_clue, parse_vote
from vzero.game.prompts import clue_prompt, decision_prompt
from vzero.game.rewards import clue_rewards, decision_reward, decision_rewards, tally
from vzero.game.scripted import OraclePlayer, RandomPlayer

__all__ = [
    "OBSERVER",
    "Game",
    "GameConfig",
    "OraclePlayer",
    "RandomPlayer",
    "Responder",
    "Stage",
    "Transcript",
    "Turn",
    "clue_prompt",
    "clue_rewards",
    "decision_prompt",
    "decision_reward",
    "decision_rewards",
    "last_clues",
    "parse_clue",
    "parse_vote",
    "play_game",
    "play_games",
    "tally",
]
