"""The text side of the MIL-NCE HowTo100M model: sentences -> 512-d joint-space embeddings.

As the port (antoine77340/S3D_HowTo100M) does it: the sentence is lower-cased and split into
words with the regular expression ``[\\w']+``; each word found in the word list becomes its
token (its position in the list plus one; if a word is listed twice, the later position
counts), words not in the list are dropped; the first 16 tokens are kept and the rest of the
16 slots filled with 0 (padding, which has a word vector of its own and takes part in the
max).  Each token's 300-d word vector goes through ``fc1`` (2048) and a ReLU, the maximum is
taken over the 16 slots, and ``fc2`` maps it to 512 numbers.  A sentence with no known word
is 16 paddings.  The dot product of a text and a video embedding is their similarity.

Keys (under ``text_module.`` in ``s3d_howto100m.pth``): ``word_embd.weight`` (66250 x 300),
``fc1.weight/bias``, ``fc2.weight/bias``.
"""
import re
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from models.s3d_howto100m.network import EMBEDDING_DIM

MAX_WORDS = 16
NUM_EMBEDDINGS = 66250   # rows of the word table: token 0 (padding) and up to 66249 words
WORD_DIM = 300
HIDDEN_DIM = 2048
WORD = re.compile(r"[\w']+")


def split_words(sentence: str) -> List[str]:
    """The words of ``sentence``, lower-cased."""
    return WORD.findall(str(sentence).lower())


class Vocabulary:
    """Words -> tokens: the word list's position + 1 (0 is padding); the last listing wins."""

    def __init__(self, words: Sequence[str]):
        if len(words) >= NUM_EMBEDDINGS:
            raise ValueError(f"{len(words)} words do not fit the model's word table of "
                             f"{NUM_EMBEDDINGS - 1} words")
        self.size = len(words)
        self.token: Dict[str, int] = {}
        for index, word in enumerate(words):
            self.token[str(word)] = index + 1

    def known(self, sentence: str) -> List[str]:
        """The words of ``sentence`` that are in the list, in order (all of them, uncut)."""
        return [w for w in split_words(sentence) if w in self.token]

    def tokens(self, sentences: Sequence[str]) -> torch.Tensor:
        """(len(sentences), 16) int64 tokens, zero-padded."""
        out = torch.zeros(len(sentences), MAX_WORDS, dtype=torch.int64)
        for row, sentence in enumerate(sentences):
            ids = [self.token[w] for w in self.known(sentence)][:MAX_WORDS]
            out[row, :len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out


class SentenceEncoder(nn.Module):
    """Tokens (B, 16) -> (B, 512): word vectors, ``fc1`` + ReLU, max over the 16, ``fc2``."""

    def __init__(self):
        super().__init__()
        # zeros, not nn.Embedding's random init (slow for 20 M numbers, on the meta device
        # too): the word vectors always come from the checkpoint
        self.word_embd = nn.Embedding.from_pretrained(torch.zeros(NUM_EMBEDDINGS, WORD_DIM),
                                                      freeze=False)
        self.fc1 = nn.Linear(WORD_DIM, HIDDEN_DIM)
        self.fc2 = nn.Linear(HIDDEN_DIM, EMBEDDING_DIM)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.fc1(self.word_embd(tokens)))
        return self.fc2(hidden.amax(dim=1))


class TextEncoder:
    """``encode(sentences)``: (len, 512) float32 embeddings, from a loaded encoder and its list."""

    def __init__(self, encoder: SentenceEncoder, vocabulary: Vocabulary):
        self.encoder = encoder.eval()
        self.vocabulary = vocabulary

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        with torch.inference_mode():
            return self.encoder(self.vocabulary.tokens(list(sentences))).float()
