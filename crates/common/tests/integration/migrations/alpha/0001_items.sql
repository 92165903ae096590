-- Same table name and migration version as beta: schemas must keep them apart.
CREATE TABLE items (id BIGINT PRIMARY KEY, owner TEXT NOT NULL);
INSERT INTO items VALUES (1, 'alpha');
