"""Storm's word-count split bolt, written with pystorm: one tuple per word of a sentence.

Run by the `shell-bolt` of config/wordcount-python.toml; needs `pip install pystorm`.
"""
from pystorm import Bolt


class SplitSentence(Bolt):
    # pystorm's Bolt anchors every emit to the input and acks the input when process()
    # returns; if process() raises, the input is failed (and its spout replays it).
    def process(self, tup):
        for word in tup.values[0].split():
            self.emit([word])


if __name__ == "__main__":
    SplitSentence().run()
