"""The speech channel in the highlight pipeline: what is said as a retrieval channel beside the
pictures, cuts that respect words, and captions of the spoken words.
"""
