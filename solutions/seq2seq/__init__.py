"""The seq2seq lab: your code. Modules: model (encoder, attention, decoder, Seq2Seq), decode (greedy, beam search), metrics, bert (a BERT encoder, given), train."""
