"""What pruning saves: sparse storage formats (``storage``) and sparse-vs-dense timings
(``bench``). Zeros in a dense tensor save neither memory nor time; these modules measure
what a sparse format and a sparse kernel actually give back."""
