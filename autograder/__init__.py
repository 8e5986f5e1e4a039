"""The kit's checks: autograder/<lab>.py holds a lab's graded checks (the grader's side),
autograder/<lab>_probes.py the probes that run the student's code (the student's side)."""
