-- Prefect's database beside zapflow's inbox (the image makes the `zapflow` one).
CREATE DATABASE prefect OWNER zapflow;
