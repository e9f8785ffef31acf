-- Schema 1: the notes the application keeps, "author: text" in one column.
CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
